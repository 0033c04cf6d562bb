"""``python -m relay_node.control.aws.sweep``: delete Route 53 A records of relay nodes that are no longer
registered in the control plane, at once, by hand (after an incident). Every relay already runs the
same sweep periodically, with a grace period (``relay_node.control.aws.sweeper``).

The live set comes from Redis (``--redis-url``: the ``fqdn`` of every node in the node set) or is
given explicitly (``--live NAME``, repeatable; ``--live`` alone with no Redis means "none live").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import redis.asyncio as aioredis

from polysocket_core.control import Keys

from .route53 import sweep_records


async def live_fqdns(client: aioredis.Redis, keys: Keys) -> set[str]:
    """The fqdn of every node that is alive in the control plane (its heartbeat key is set).

    A node's record outlives it (up to an hour), its alive key only by the heartbeat TTL, so the
    alive key is what says "live"; a node that is draining still heart-beats and counts as live.
    """
    ids = sorted(_text(i) for i in await client.smembers(keys.nodes))
    async with client.pipeline(transaction=False) as p:  # one round trip, whatever the fleet's size
        for node_id in ids:
            p.exists(keys.alive(node_id))
            p.hget(keys.node(node_id), "fqdn")
        answers = await p.execute() if ids else []
    return {_text(fqdn) for alive, fqdn in zip(answers[0::2], answers[1::2], strict=True) if alive and fqdn}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def live_fqdns_from_redis(redis_url: str, key_prefix: str = "ps:", ca_file: str = "") -> set[str]:
    """:func:`live_fqdns` through a connection of its own (the command's)."""
    from polysocket_core.redis_client import ANSWER_SOON, redis_client

    client = redis_client(redis_url, patience=ANSWER_SOON, ca_file=ca_file, decode_responses=True)
    try:
        return await live_fqdns(client, Keys(key_prefix))
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m relay_node.control.aws.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zone-id", default=os.environ.get("POLYSOCKET_ROUTE53_ZONE_ID"), required=False)
    p.add_argument("--relay-domain", required=True, help="e.g. relay.example.com")
    p.add_argument("--redis-url", default=os.environ.get("POLYSOCKET_REDIS_URL"))
    p.add_argument("--redis-ca-file", default=os.environ.get("POLYSOCKET_REDIS_CA_FILE", ""),
                   help="CA bundle (PEM) that verifies a rediss:// URL (default: the system's)")
    p.add_argument("--key-prefix", default=os.environ.get("POLYSOCKET_KEY_PREFIX", "ps:"))
    p.add_argument("--live", action="append", default=None, metavar="FQDN",
                   help="a live node name (instead of Redis); repeatable")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.zone_id:
        p.error("--zone-id (or POLYSOCKET_ROUTE53_ZONE_ID) is required")
    if args.live is not None:
        live = set(args.live)
    elif args.redis_url:
        live = asyncio.run(live_fqdns_from_redis(args.redis_url, args.key_prefix, args.redis_ca_file))
    else:
        p.error("give --redis-url (or POLYSOCKET_REDIS_URL) or --live")
    deleted = sweep_records(args.zone_id, args.relay_domain, live, dry_run=args.dry_run)
    for name in deleted:
        print(("would delete " if args.dry_run else "deleted ") + name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
