"""A tiny threaded TCP server on 127.0.0.1, for the browser tests' stand-ins (proxies, slow resources).

A subclass implements ``handle(conn)``; each accepted connection gets a daemon thread, and
``close()`` stops accepting (the threads end with their connections).
"""

from __future__ import annotations

import socket
import threading


class LoopbackServer:
    def __init__(self, backlog: int = 64) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()
