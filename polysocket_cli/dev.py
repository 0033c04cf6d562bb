"""``polysocket dev``: the whole stack on loopback in one process tree, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import signal
import time
from types import FrameType

from .processes import Stack
from .settings import DevSettings


class _Stop(Exception):
    pass


def _raise_stop(sig: int, frame: FrameType | None) -> None:
    raise _Stop()


def run_dev(settings: DevSettings) -> int:
    stack = Stack(quiet=False, key_prefix=settings.key_prefix)
    port, relays = settings.port, settings.relays
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        if settings.redis_url:
            stack.redis_url = settings.redis_url
        else:
            stack.start_valkey()
        relay_args = ["--drain-grace", "1"]
        for i in range(1, relays + 1):
            stack.start_relay(f"node{i}", port=port + i, extra=relay_args)
        stack.start_router(port=port)
        token = stack.create_token(value=settings.dev_token or None)
        echo_port = port + relays + 1
        stack.start_echo(port=echo_port)
        router = f"http://localhost:{port}"
        print(
            "\npolysocket dev is up (Ctrl-C stops everything)\n"
            f"  redis    {stack.redis_url}\n"
            f"  router   {router}/connect\n"
            + "".join(f"  relay    http://node{i}.localhost:{port + i}/healthz\n"
                      for i in range(1, relays + 1))
            + f"  echo     ws://127.0.0.1:{echo_port}/\n"
            f"  demo     {router}/client/demo.html?token={token}&target=ws://127.0.0.1:{echo_port}/\n"
            f"  token    {token}   (any origin, loopback targets only)\n"
            f"  logs     {stack.log_dir}\n\n"
            "try:\n"
            f"  curl '{router}/connect?from=curl&token={token}&target=ws://127.0.0.1:{echo_port}/'\n",
            flush=True,
        )
        while all(p.popen.poll() is None for p in stack.procs):
            time.sleep(0.5)
        dead = [p.name for p in stack.procs if p.popen.poll() is not None]
        print(f"polysocket dev: {', '.join(dead)} exited; stopping", flush=True)
        return 1
    except (KeyboardInterrupt, _Stop):
        print("\npolysocket dev: stopping", flush=True)
        return 0
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"polysocket dev: {exc}; stopping", flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
