"""A fault-injecting HTTP/1.1 proxy for loopback tests: it sits between a client and a relay and,
per request, passes the answer, delays it, drops it after the relay has processed the request, or
resets the connection (before the request reaches the relay, or after it was answered).

It understands just enough HTTP/1.1 for the relay's traffic: requests and answers framed by
``Content-Length`` (the relay always sends one; clients here send bodies with one), keep-alive,
one upstream connection per client connection. Faults are drawn from a seeded ``random.Random`` so
a failing run can be repeated with the seed it prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field

from polysocket_cli.processes import free_port


@dataclass
class FaultRates:
    drop: float = 0.2  # the relay processes the request; its answer is thrown away (connection closed)
    delay: float = 0.2  # the answer is held back for up to ``max_delay_s``
    reset: float = 0.2  # RST: half before the request reaches the relay, half after it was answered
    max_delay_s: float = 0.15


@dataclass
class FaultStats:
    requests: int = 0
    passed: int = 0
    delayed: int = 0
    dropped: int = 0
    reset_before: int = 0
    reset_after: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.requests} requests: {self.passed} passed, {self.delayed} delayed, "
                f"{self.dropped} answers dropped, {self.reset_before} reset before and "
                f"{self.reset_after} after the relay")


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed middlebox or a dropped NAT entry would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_port: int, rates: FaultRates, seed: int) -> None:
        self.upstream_port = upstream_port
        self.rates = rates
        self.seed = seed
        self.rng = random.Random(seed)
        self.stats = FaultStats()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", free_port())
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()

    def _draw(self) -> str:
        r = self.rng.random()
        rates = self.rates
        if r < rates.drop:
            return "drop"
        r -= rates.drop
        if r < rates.delay:
            return "delay"
        r -= rates.delay
        if r < rates.reset:
            return "reset_before" if self.rng.random() < 0.5 else "reset_after"
        return "pass"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    body = await reader.readexactly(_content_length(head))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                stats = self.stats
                stats.requests += 1
                path = head.split(b" ", 2)[1].split(b"?", 1)[0].decode("latin-1")
                stats.by_path[path] = stats.by_path.get(path, 0) + 1
                fault = self._draw()
                if fault == "reset_before":
                    stats.reset_before += 1
                    _reset(writer)
                    return
                if up is None:
                    up = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                up_reader, up_writer = up
                up_writer.write(head + body)
                await up_writer.drain()
                try:
                    answer_head = await up_reader.readuntil(b"\r\n\r\n")
                    answer = answer_head + await up_reader.readexactly(_content_length(answer_head))
                except (asyncio.IncompleteReadError, ConnectionError):
                    _reset(writer)
                    return
                if fault == "drop":
                    stats.dropped += 1
                    return  # closes both connections: the answer is lost, the request was processed
                if fault == "reset_after":
                    stats.reset_after += 1
                    _reset(writer)
                    return
                if fault == "delay":
                    stats.delayed += 1
                    await asyncio.sleep(self.rng.random() * self.rates.max_delay_s)
                else:
                    stats.passed += 1
                writer.write(answer)
                await writer.drain()
                if b"\r\nconnection: close\r\n" in answer_head.lower():
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()
            if up is not None:
                up[1].close()
