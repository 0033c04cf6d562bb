"""The in-process doubles for relay_node.edge.http1's protocol, in the style of uvicorn's protocol tests:
a transport that records what the protocol writes and an ``answer`` seam that records the calls, so a
test feeds bytes into ``data_received`` and reads exact bytes back, with no sockets and no servers."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from relay_node.edge.http1 import Answer, Connections, Limits, ProtocolRequest, RelayHTTPProtocol, StreamSink

OK: Answer = (200, [(b"content-type", b"application/json")], b'{"ok":true}')


class MockTransport:
    """Records writes; ``close`` only marks (the test decides when ``connection_lost`` comes)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False
        self.read_paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.buffer += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0  # the client reads everything at once

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def statuses(self) -> list[int]:
        return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.buffer)]


class Answerer:
    """The ``answer`` seam double: records calls; ``hold`` makes answers wait for ``release``."""

    def __init__(self, answer: Answer = OK) -> None:
        self.calls: list[tuple[str, bytes, str, bytes]] = []
        self.answer_value = answer
        self.gate: asyncio.Event | None = None
        self.running = 0
        self.max_running = 0

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()

    async def __call__(self, path: str, query: bytes, req: ProtocolRequest) -> Answer:
        self.calls.append((path, query, req.method, await req.body()))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.running -= 1
        return self.answer_value


def make(answer: Any = None, **limits: Any) -> tuple[RelayHTTPProtocol, MockTransport, Answerer, Connections]:
    answerer = answer if answer is not None else Answerer()
    conns = Connections()
    proto = RelayHTTPProtocol(answerer, Limits(**limits), conns)
    transport = MockTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, answerer, conns


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


# Streamed answers (tests/unit/test_http1_stream.py, test_http1_continue.py)

STREAM_REQ = b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"


class FakeStream:
    """A StreamBody that records what the protocol asked of it."""

    def __init__(self, first: bytes = b":ok\n\n", more: bool = True) -> None:
        self.first = first
        self.more = more
        self.sink: StreamSink | None = None
        self.stops = 0
        self.was_lost = False

    def start(self, sink: StreamSink) -> tuple[bytes, bool]:
        self.sink = sink
        return self.first, self.more

    def stop(self) -> None:
        self.stops += 1
        assert self.sink is not None
        self.sink.end_stream()

    def lost(self) -> None:
        self.was_lost = True
        self.sink = None


class Streams:
    """The answer seam: ``/stream`` answers a new FakeStream, anything else ``OK``."""

    def __init__(self, first: bytes = b":ok\n\n", more: bool = True) -> None:
        self.streams: list[FakeStream] = []
        self.first = first
        self.more = more

    async def __call__(self, path: str, query: bytes, req: ProtocolRequest) -> Answer:
        if path != "/stream":
            return OK
        s = FakeStream(self.first, self.more)
        self.streams.append(s)
        return 200, [(b"content-type", b"text/event-stream")], s


def body_after_head(tr: MockTransport) -> bytes:
    return tr.buffer.split(b"\r\n\r\n", 1)[1]


