"""``polysocket status [--json] [--watch [SECONDS]] [--all]``: the fleet as the control plane sees it.

The rows are computed by ``polysocket_core.fleet`` (pure); this module reads Redis and draws.

Cost of one read, for N registered nodes: SMEMBERS of ``Keys.nodes`` (one round trip, O(N)), TIME
(one more: a cluster pipeline takes keyed commands only), then one pipeline of, per node, HGETALL of
its hash, PTTL of its alive key and HGETALL of its stats (3N commands in one round trip per primary
they live on, O(1) each, no script, nothing blocks Redis for longer
than one small command). At 1,000 nodes that is about 3,000 commands and a few hundred KB of
replies: a few milliseconds of Redis time per refresh, which ``--watch`` takes at most once a
second (:data:`WATCH_FLOOR_S`).

``--json`` prints one object (schema :data:`JSON_VERSION`, below); with ``--watch``, one per
line for every refresh (JSON Lines)::

    {"version": 1, "now": 1765075200.0,
     "totals": {"live", "draining", "dead", "sockets", "capacity", "utilization", "connects_per_s"},
     "nodes": [{"id", "fqdn", "slot", "state", "alive", "draining", "sockets", "capacity",
                "utilization", "started_at", "age_s", "heartbeat_age_s", "connects_per_s"}, ...]}

``now`` is Redis's clock (unix seconds); ``utilization`` is a fraction (0..1); any value not
known is ``null``. New fields may be added; none is renamed or removed without a new version.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from polysocket_core.control import Keys
from polysocket_core.fleet import FleetTotals, NodeRow, RawNode, fleet_rows, fleet_totals, stats_key
from polysocket_core.redis_client import ANSWER_SOON, redis_client
from polysocket_core.settings import add_arguments

from .settings import StatusSettings

JSON_VERSION = 1
WATCH_DEFAULT_S = 2.0
WATCH_FLOOR_S = 1.0  # a refresh costs Redis 3 commands per node: not more than once a second
CLEAR = "\x1b[H\x1b[2J"


def add_status_arguments(p: argparse.ArgumentParser, settings: type) -> None:
    add_arguments(p, settings)
    p.add_argument("--json", action="store_true", help="machine-readable output (schema: see docs/deploy.md)")
    p.add_argument("--watch", nargs="?", type=float, const=WATCH_DEFAULT_S, default=None, metavar="SECONDS",
                   help=f"redraw every SECONDS (default {WATCH_DEFAULT_S:g}, at least {WATCH_FLOOR_S:g}) "
                        "until Ctrl-C")
    p.add_argument("--all", action="store_true", help="also list nodes that stopped heart-beating (dead)")


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _mapping(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


async def read_fleet(redis: aioredis.Redis, keys: Keys) -> tuple[list[RawNode], float]:
    """Every registered node's raw records, and Redis's clock (see the module docstring for the cost)."""
    ids = sorted(_text(i) for i in await redis.smembers(keys.nodes))
    seconds, micros = await redis.time()  # not in the pipeline: a cluster pipeline takes only keyed commands
    async with redis.pipeline(transaction=False) as p:
        for node_id in ids:
            p.hgetall(keys.node(node_id))
            p.pttl(keys.alive(node_id))
            p.hgetall(stats_key(keys, node_id))
        replies = await p.execute()
    raws = [RawNode(node_id, _mapping(replies[3 * i]), int(replies[1 + 3 * i]), _mapping(replies[2 + 3 * i]))
            for i, node_id in enumerate(ids)]
    return raws, int(seconds) + int(micros) / 1e6


def to_json(rows: Sequence[NodeRow], totals: FleetTotals, now: float) -> dict[str, Any]:
    return {
        "version": JSON_VERSION,
        "now": now,
        "totals": {**asdict(totals), "utilization": totals.utilization},
        "nodes": [{"id": r.id, "fqdn": r.fqdn, "slot": r.slot, "state": r.state, "alive": r.alive,
                   "draining": r.draining, "sockets": r.sockets, "capacity": r.capacity,
                   "utilization": r.utilization, "started_at": r.started_at, "age_s": r.age_s,
                   "heartbeat_age_s": r.heartbeat_age_s, "connects_per_s": r.connects_per_s} for r in rows],
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    hours = minutes // 60
    return f"{hours}h{minutes % 60:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(rows: Sequence[NodeRow], totals: FleetTotals) -> str:
    """Aligned columns, one node a line, then the fleet's totals."""
    lines = [("NODE", "STATE", "SLOT", "SOCKETS", "CAPACITY", "UTIL", "CONN/S", "AGE", "BEAT", "FQDN")]
    for r in rows:
        lines.append((r.id, r.state, r.slot or "-", _number(r.sockets), _number(r.capacity), _percent(r.utilization),
                      _rate(r.connects_per_s), _duration(r.age_s), _duration(r.heartbeat_age_s), r.fqdn or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    right = {3, 4, 5, 6, 7, 8}  # numbers align right
    body = ["  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                      for i, cell in enumerate(line)).rstrip() for line in lines]
    summary = (f"{totals.live} live ({totals.draining} draining), {totals.dead} dead; "
               f"{totals.sockets} / {totals.capacity} sockets ({_percent(totals.utilization)}); "
               f"{totals.connects_per_s:.1f} connects/s")
    return "\n".join([*body, "", summary])


def render(raws: Sequence[RawNode], now: float, *, as_json: bool, show_dead: bool) -> str:
    rows = fleet_rows(raws, now)
    totals = fleet_totals(rows)
    shown = rows if show_dead else [r for r in rows if r.alive]
    if as_json:
        return orjson.dumps(to_json(shown, totals, now)).decode()
    return table(shown, totals)


async def _run(settings: StatusSettings, args: argparse.Namespace, out: TextIO,
               sleep: Callable[[float], Any] = asyncio.sleep) -> int:
    redis = redis_client(settings.redis_url, patience=ANSWER_SOON, ca_file=settings.redis_ca_file)
    keys = Keys(settings.key_prefix)
    redraw = out.isatty() and not args.json
    try:
        while True:
            raws, now = await read_fleet(redis, keys)
            text = render(raws, now, as_json=args.json, show_dead=args.all)
            if args.watch is not None and redraw:
                text = CLEAR + time.strftime("%H:%M:%S") + f"  every {args.watch:g}s, Ctrl-C to stop\n\n" + text
            print(text, file=out, flush=True)
            if args.watch is None:
                return 0
            await sleep(args.watch)
    finally:
        await redis.aclose()


def run_status(settings: StatusSettings, args: argparse.Namespace) -> int:
    if args.watch is not None and not args.watch >= WATCH_FLOOR_S:
        print(f"polysocket status: --watch {args.watch:g}: must be at least {WATCH_FLOOR_S:g} seconds",
              file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(settings, args, sys.stdout))
    except KeyboardInterrupt:
        return 0
    except (OSError, RedisConnectionError) as exc:  # the URL may hold a password: name the host only
        where = urlsplit(settings.redis_url).netloc.rpartition("@")[2]
        print(f"polysocket status: cannot reach Redis at {where}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):
            print(f"polysocket status: Redis error: {exc}", file=sys.stderr)
            return 1
        raise
