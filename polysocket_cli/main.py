"""``polysocket router|relay|dev|echo``: every flag can also be set as ``POLYSOCKET_<FLAG>``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .tokens_cmd import add_token_parser, run_token

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def env_name(flag: str) -> str:
    return "POLYSOCKET_" + flag.lstrip("-").replace("-", "_").upper()


def add(parser: argparse.ArgumentParser, flag: str, *, type: Callable[[str], Any] = str,
        default: Any = None, help: str = "", **kw: Any) -> None:
    """An option whose default comes from ``POLYSOCKET_<FLAG>`` when that is set."""
    env = env_name(flag)
    raw = os.environ.get(env)
    value = type(raw) if raw not in (None, "") else default
    shown = f" (env {env}; default: {default})" if default is not None else f" (env {env})"
    parser.add_argument(flag, type=type, default=value, help=help + shown, **kw)


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def seconds(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 seconds")
    return value


def add_tls(parser: argparse.ArgumentParser) -> None:
    add(parser, "--ssl-certfile", help="serve HTTPS with this certificate chain (PEM); needed for HTTPS pages")
    add(parser, "--ssl-keyfile", help="private key (PEM) of --ssl-certfile")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polysocket",
        description="WebSockets for every browser: a JSONP / CORS long-polling relay to unmodified "
                    "WebSocket servers.",
    )
    parser.add_argument("--log-level", default=os.environ.get("POLYSOCKET_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("router", help="run the router (GET /connect) under uvicorn")
    add(r, "--host", default="127.0.0.1", help="address to listen on")
    add(r, "--port", type=int, default=8100, help="port to listen on")
    add(r, "--redis-url", default=DEFAULT_REDIS_URL, help="Redis / Valkey URL of the control plane")
    add(r, "--static-dir", default="", help="serve this directory under /client/ (the browser library)")
    add(r, "--admission", default="tokens", choices=["tokens", "open"],
        help="'tokens' checks every connect; 'open' admits anything (loopback experiments only)")
    add(r, "--allow-target-cidrs", default="",
        help="comma-separated CIDRs that targets may resolve to although private (e.g. 127.0.0.0/8)")
    add_tls(r)

    n = sub.add_parser("relay", help="run a relay node (send / poll / close) under uvicorn")
    add(n, "--host", default="127.0.0.1", help="address to listen on")
    add(n, "--port", type=int, default=8101, help="port to listen on")
    add(n, "--redis-url", default=DEFAULT_REDIS_URL, help="Redis / Valkey URL of the control plane")
    add(n, "--fqdn", help="public name of this node, clients use {uniq}.FQDN (may carry :port)")
    add(n, "--node-id", help="unique node id (default: the host name)")
    add(n, "--capacity", type=positive_int, default=10_000, help="most sockets this node holds")
    add(n, "--idle-timeout", type=seconds, default=60.0, help="close sockets with no poll for this long")
    add(n, "--drain-grace", type=seconds, default=10.0, help="on SIGTERM, serve this long before closing")
    add(n, "--gap-hold", type=seconds, default=10.0, help="how long a send waits for a missing seq")
    add(n, "--heartbeat-ttl", type=seconds, default=5.0, help="node counts as dead this long after its last heartbeat")
    add(n, "--max-message", type=positive_int, default=4 * 1024 * 1024, help="largest message, bytes")
    add(n, "--buffer-bytes", type=positive_int, default=1024 * 1024,
        help="unacked bytes per socket at which reading upstream pauses")
    add(n, "--metrics-token", default="",
        help="require 'Authorization: Bearer TOKEN' for /metrics (it is served on the public port)")
    add_tls(n)

    d = sub.add_parser("dev", help="run Valkey, a router, two relays and an echo target on loopback")
    add(d, "--redis-url", help="use this Redis instead of starting an embedded Valkey")
    add(d, "--port", type=int, default=8100, help="router port; relays use the next two, echo the one after")
    add(d, "--relays", type=positive_int, default=2, help="number of relay nodes")
    add(d, "--dev-token", help="value of the development token (default: a fresh random one)")

    add_token_parser(sub, add, DEFAULT_REDIS_URL)

    e = sub.add_parser("echo", help="run a WebSocket echo target (close:/flood:/abort commands)")
    add(e, "--host", default="127.0.0.1", help="address to listen on")
    add(e, "--port", type=int, default=8109, help="port to listen on")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "router":
        return run_router(args)
    if args.command == "relay":
        return run_relay_cmd(args)
    if args.command == "dev":
        from .dev import run_dev

        return run_dev(args.redis_url, args.port, args.relays, args.dev_token)
    if args.command == "token":
        return run_token(args)
    if args.command == "echo":
        import asyncio

        from .echo import run_echo

        print(f"echo target on ws://{args.host}:{args.port}/", flush=True)
        asyncio.run(run_echo(args.host, args.port))
        return 0
    return 2


def run_router(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ["POLYSOCKET_REDIS_URL"] = args.redis_url
    os.environ["POLYSOCKET_ADMISSION"] = args.admission
    os.environ["POLYSOCKET_ALLOW_TARGET_CIDRS"] = args.allow_target_cidrs
    if args.admission == "open":
        logging.getLogger("polysocket").warning("open admission: any caller may open any target")
    if args.static_dir:
        os.environ["POLYSOCKET_STATIC_DIR"] = args.static_dir
    from router_fn.app import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level,
                loop="uvloop", http="httptools", access_log=False,
                ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    return 0


def run_relay_cmd(args: argparse.Namespace) -> int:
    from polysocket_core.control import NODE_ID_RE
    from relay_node.config import RelayConfig, default_node_id
    from relay_node.server import run_relay

    if args.node_id and NODE_ID_RE.fullmatch(args.node_id) is None:
        print("polysocket relay: --node-id must be 1-64 of A-Z a-z 0-9 _ . -", file=sys.stderr)
        return 2
    fqdn = args.fqdn or f"{args.host}:{args.port}"
    if "/" in fqdn or " " in fqdn:
        print("polysocket relay: --fqdn must be a host name, optionally with :port", file=sys.stderr)
        return 2
    config = RelayConfig(
        fqdn=fqdn,
        node_id=args.node_id or default_node_id(),
        capacity=args.capacity,
        redis_url=args.redis_url,
        idle_timeout_s=args.idle_timeout,
        drain_grace_s=args.drain_grace,
        gap_hold_s=args.gap_hold,
        heartbeat_ttl_s=args.heartbeat_ttl,
        heartbeat_interval_s=min(1.0, args.heartbeat_ttl / 3),
        max_message_bytes=args.max_message,
        buffer_high_bytes=args.buffer_bytes,
        metrics_token=args.metrics_token,
    )
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print("polysocket relay: --ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    run_relay(config, args.host, args.port, log_level=args.log_level,
              ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
