"""A small HTTP/1.1 proxy on loopback in front of one relay, for the streaming tests.

``mode="buffer"`` passes no byte of an answer on until the whole answer has arrived (as some
corporate and antivirus proxies do): a ``/stream`` then shows nothing until it ends.
``mode="cut"`` passes answers through as they arrive, but cuts each ``/stream`` connection after
``cut_after`` body bytes (a different point each time), in the middle of whatever it was carrying.
``mode="stall"`` passes the first ``cut_after`` body bytes of each ``/stream`` and then nothing more
(it keeps reading the relay's answer and drops it): a stream that starts, then falls silent.

One request per connection (``connection: close`` both ways), so answers never queue behind a stream.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import BinaryIO

from tests.support.loopback import LoopbackServer, read_head

Sink = Callable[[bytes], None]


def _with_close(lines: list[bytes]) -> bytes:
    kept = [lines[0], *(ln for ln in lines[1:] if not ln.lower().startswith(b"connection:"))]
    return b"\r\n".join([*kept, b"connection: close", b"", b""])


def _copy_body(f: BinaryIO, headers: dict[bytes, bytes], sink: Sink) -> None:
    """Pass one message body on as it arrives, framing and all (content-length, chunked or to EOF)."""
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        while True:
            size_line = f.readline(1024)
            if not size_line:
                return
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            sink(size_line)
            if size == 0:
                while True:  # trailers, then the blank line
                    line = f.readline(65536)
                    sink(line)
                    if line in (b"\r\n", b"\n", b""):
                        return
            left = size + 2
            while left:
                piece = f.read1(min(left, 65536))  # type: ignore[attr-defined]
                if not piece:
                    return
                sink(piece)
                left -= len(piece)
        return
    length = headers.get(b"content-length")
    if length is not None:
        left = int(length)
        while left:
            piece = f.read(min(left, 65536))
            if not piece:
                return
            sink(piece)
            left -= len(piece)
        return
    while True:
        piece = f.read1(65536)  # type: ignore[attr-defined]
        if not piece:
            return
        sink(piece)


class _Cut(Exception):
    """The proxy cut a stream on purpose."""


class RelayProxy(LoopbackServer):
    """Listens on 127.0.0.1:``port`` and forwards every request to 127.0.0.1:``upstream``."""

    def __init__(self, upstream: int, mode: str, cut_after: int = 4000) -> None:
        assert mode in ("buffer", "cut", "stall")
        self.upstream = upstream
        self.mode = mode
        self.cut_after = cut_after
        self.paths: list[str] = []  # request targets, in arrival order
        self.streams = 0
        self.cuts = 0  # streams cut in the middle
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        with conn, conn.makefile("rb") as cf:
            head = read_head(cf)
            if head is None:
                return
            lines, headers = head
            target = lines[0].split(b" ")[1].decode("latin-1")
            with self._lock:
                self.paths.append(target)
            body = cf.read(int(headers.get(b"content-length", b"0")))
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=180)
            except OSError:
                return
            with up, up.makefile("rb") as uf:
                up.sendall(_with_close(lines) + body)
                answer = read_head(uf)
                if answer is None:
                    return
                alines, aheaders = answer
                is_stream = target.startswith("/stream")
                if self.mode == "buffer":
                    held: list[bytes] = [_with_close(alines)]
                    _copy_body(uf, aheaders, held.append)
                    with contextlib.suppress(OSError):  # the client may have given up long ago
                        conn.sendall(b"".join(held))
                    return
                with self._lock:
                    self.streams += is_stream
                    budget = self.cut_after + (997 * self.streams if self.mode == "cut" else 0)
                sent = [0]

                def through(piece: bytes) -> None:
                    if is_stream and self.mode == "stall":
                        if sent[0] < budget:
                            conn.sendall(piece[: budget - sent[0]])
                        sent[0] += len(piece)
                        return
                    if is_stream and sent[0] + len(piece) > budget:
                        conn.sendall(piece[: budget - sent[0]])
                        with self._lock:
                            self.cuts += 1
                        raise _Cut()
                    conn.sendall(piece)
                    sent[0] += len(piece)

                try:
                    conn.sendall(_with_close(alines))
                    _copy_body(uf, aheaders, through)
                except (_Cut, OSError):
                    return

    def stream_paths(self) -> list[str]:
        with self._lock:
            return [p for p in self.paths if p.startswith("/stream")]
