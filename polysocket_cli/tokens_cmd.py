"""``polysocket token create|list|show|revoke``: operator management of tokens in Redis."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys

from redis.exceptions import RedisError

from polysocket_core.control import Keys
from polysocket_core.redis_client import ANSWER_SOON, explain, redis_client
from polysocket_core.settings import add_arguments
from router_fn.policy import PatternError
from router_fn.tokens import TokenRecord, TokenStore, parse_duration

from .settings import TokenSettings

DEV_TARGETS = ["ws://127.0.0.1:*/*", "ws://localhost:*/*", "ws://[::1]:*/*",
               "wss://127.0.0.1:*/*", "wss://localhost:*/*", "wss://[::1]:*/*"]


def add_token_actions(t: argparse.ArgumentParser, settings: type) -> None:
    """``polysocket token ACTION``: each action takes the token settings (Redis URL, key prefix)."""
    tsub = t.add_subparsers(dest="token_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        add_arguments(p, settings)
        p.add_argument("--json", action="store_true", help="machine-readable output")

    c = tsub.add_parser("create", help="create a token (printed once; only its hash is stored)")
    common(c)
    c.add_argument("--origin", action="append", required=True, metavar="ORIGIN",
                   help="allowed page origin: https://app.example.com, https://*.example.com or '*' (repeatable)")
    c.add_argument("--target", action="append", required=True, metavar="PATTERN",
                   help="allowed target: wss://host[:port|:*]/path-glob, e.g. wss://echo.example.com/* (repeatable)")
    c.add_argument("--max-sockets", type=int, required=True, metavar="N", help="most sockets open at once")
    c.add_argument("--expires-in", metavar="DURATION", help="e.g. 30d, 12h, 15m")
    c.add_argument("--label", default="", help="a note for operators")
    c.add_argument("--value", help=argparse.SUPPRESS)  # fixed value (polysocket dev --dev-token)

    lst = tsub.add_parser("list", help="list tokens (ids, never values)")
    common(lst)

    s = tsub.add_parser("show", help="show one token and its sockets in use")
    common(s)
    s.add_argument("token_id")

    r = tsub.add_parser("revoke", help="revoke a token: new connects are refused at once")
    common(r)
    r.add_argument("token_id")
    r.add_argument("--kill", action="store_true", help="also close its open sockets (code 1008)")


def _when(ts: int | None) -> str:
    if not ts:
        return "never"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _table(records: list[TokenRecord]) -> str:
    rows = [("ID", "STATUS", "MAX", "EXPIRES", "LABEL", "ORIGINS", "TARGETS")]
    for r in records:
        rows.append((r.id, r.status(), str(r.max_sockets), _when(r.expires_at), r.label,
                     ",".join(r.origins), ",".join(r.targets)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)


async def _run(settings: TokenSettings, args: argparse.Namespace) -> int:
    redis = redis_client(settings.redis_url, patience=ANSWER_SOON, ca_file=settings.redis_ca_file)
    store = TokenStore(redis, Keys(settings.key_prefix))
    try:
        cmd = args.token_command
        if moved := await store.migrate_legacy():
            print(f"polysocket token: moved {moved} token(s) to the hash-tagged keys the router reads",
                  file=sys.stderr)
        if cmd == "create":
            try:
                expires = parse_duration(args.expires_in) if args.expires_in else None
                token, record = await store.create(args.origin, args.target, args.max_sockets, args.label,
                                                   expires, token=args.value)
            except (ValueError, PatternError) as exc:
                print(f"polysocket token create: {exc}", file=sys.stderr)
                return 2
            if args.json:
                print(json.dumps({"token": token, **record.to_json()}))
            else:
                print(f"token    {token}\nid       {record.id}\n"
                      f"expires  {_when(record.expires_at)}\n"
                      "This is the only time the token is shown: only its SHA-256 is stored.")
            return 0
        if cmd == "list":
            records = await store.list()
            print(json.dumps([r.to_json() for r in records]) if args.json else _table(records))
            return 0
        found = await store.get(args.token_id)
        if found is None:
            print(f"polysocket token {cmd}: no token with id {args.token_id}", file=sys.stderr)
            return 1
        if cmd == "show":
            info = {**found.to_json(), "sockets_in_use": await store.sockets_in_use(found.id)}
            if args.json:
                print(json.dumps(info))
            else:
                print(_table([found]) + f"\nsockets in use: {info['sockets_in_use']}")
            return 0
        if cmd == "revoke":
            revoked = await store.revoke(found.id, kill=args.kill)
            assert revoked is not None
            print(json.dumps(revoked.to_json()) if args.json else
                  f"revoked {found.id}" + (" and asked every node to close its sockets" if args.kill else ""))
            return 0
        return 2
    finally:
        await redis.aclose()


def run_token(settings: TokenSettings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(settings, args))
    except (RedisError, OSError) as exc:
        print(f"polysocket token: {explain(settings.redis_url, exc)}", file=sys.stderr)
        return 1
