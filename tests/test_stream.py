"""``GET /stream`` end to end (docs/protocol.md): a real Valkey, router, relay and echo target, the
stream read over raw connections (tests/sse_client.py) so every byte of the body is checked.

The relay here has small budgets (``--stream-bytes 4096``, ``--buffer-bytes 16384``) so that a
stream ends by its byte budget, and a stream parks on the buffer bound, within a few messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from polysocket_cli.processes import Proc, Stack

from .sse_client import SSEStream, StreamEnded
from .wire_client import Conn, connect

pytestmark = pytest.mark.stack

STREAM_BYTES = 4096
BUFFER_BYTES = 16384


@dataclass
class StreamStack:
    stack: Stack
    router_url: str
    relay: Proc
    token: str
    target: str

    async def connect(self, http: httpx.AsyncClient) -> Conn:
        return await connect(http, self.router_url, self.target, token=self.token)

    async def stream(self, c: Conn, headers: dict[str, str] | None = None, **params: Any) -> SSEStream:
        return await SSEStream.open("127.0.0.1", self.relay.port, c.fqdn, {"socket": c.socket, **params}, headers)


@pytest.fixture(scope="module")
def sstack() -> Iterator[StreamStack]:
    s = Stack()
    try:
        s.start_valkey()
        relay = s.start_relay("node1", extra=["--stream-bytes", str(STREAM_BYTES), "--stream-seconds", "20",
                                              "--buffer-bytes", str(BUFFER_BYTES)])
        router = s.start_router()
        token = s.create_token()
        echo = s.start_echo()
        yield StreamStack(s, f"http://127.0.0.1:{router.port}", relay, token, f"ws://127.0.0.1:{echo.port}/")
    finally:
        s.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def test_events_carry_seq_ids_and_poll_fragments(sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    s = await sstack.stream(c)
    assert s.status == 200
    assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert s.headers["transfer-encoding"] == "chunked"
    assert s.headers["cache-control"] == "no-store"
    assert s.headers["x-accel-buffering"] == "no"
    assert s.headers["access-control-allow-origin"] == "*"
    first = await s.next()
    assert (first.kind, first.text) == ("comment", "ok")
    await c.send_text("hello")
    await c.send_text("wörld \u2028")
    got = await s.events(2)
    assert [(e.id, e.data) for e in got] == [(0, {"seq": 0, "type": "text", "data": "hello"}),
                                            (1, {"seq": 1, "type": "text", "data": "wörld \u2028"})]
    await s.close()
    await c.close()
