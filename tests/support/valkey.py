"""A Valkey of a test's own that it may SIGKILL and start again, empty, on the same port: Redis
restarting under live routers, relays and clients."""

from __future__ import annotations

import signal
import time

from polysocket_cli.processes import Proc, Stack
from tests.support.ports import free_port


class RestartableValkey:
    def __init__(self, extra: list[str] | None = None) -> None:
        self.stack = Stack()
        self.port = free_port()
        self.extra = extra or []
        self.proc: Proc = self.stack.start_valkey(self.port, extra=self.extra)

    @property
    def url(self) -> str:
        return self.stack.redis_url

    def restart_empty(self, down_s: float = 0.0) -> None:
        """SIGKILL Valkey and start a fresh one, without data, on the same port ``down_s`` later."""
        self.kill()
        time.sleep(down_s)
        self.start()

    def kill(self) -> None:
        """SIGKILL Valkey: its port refuses connections until :meth:`start`."""
        self.proc.popen.send_signal(signal.SIGKILL)
        self.proc.popen.wait(10)
        self.stack.procs.remove(self.proc)

    def start(self) -> None:
        """A fresh Valkey, without data, on the same port."""
        self.proc = self.stack.start_valkey(self.port, extra=self.extra)

    def stop(self) -> None:
        self.stack.stop()
