"""A tiny threaded TCP server on 127.0.0.1 and the one HTTP/1.1 head reader, for the tests' stand-ins
(proxies, parents, slow resources) that a real server cannot play.

A subclass implements ``handle(conn)``; each accepted connection gets a daemon thread, and
``close()`` stops accepting (the threads end with their connections).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import BinaryIO

from tests.support.ports import free_port

MAX_HEAD_LINE = 65536


class LoopbackServer:
    def __init__(self, backlog: int = 128) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(backlog)
        self.port = int(self.sock.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop accepting: the shutdown wakes the thread blocked in ``accept``."""
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def read_head(f: BinaryIO) -> tuple[list[bytes], dict[bytes, bytes]] | None:
    """An HTTP/1.1 message's start line and header lines (without CRLF), and its headers by
    lowercase name; None if the connection ended before the head did."""
    lines: list[bytes] = []
    while True:
        line = f.readline(MAX_HEAD_LINE)
        if not line:
            return None
        line = line.rstrip(b"\r\n")
        if not line:
            break
        lines.append(line)
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return lines, headers
