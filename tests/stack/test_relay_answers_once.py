"""A relay acks an establish request only when its open is slow (bench/PERF_LEDGER.md,
``relay-answers-once``): the router still learns that the node took the request before the
target's handshake ends, and a router that gave up meanwhile still gets no socket. Real relay
process and Valkey; the target is a loopback server that holds its handshake answer until the
test lets it go, so "slow" does not depend on the machine's load."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from polysocket_cli.processes import Stack, free_port
from polysocket_core.control import EstablishReply, EstablishRequest, Keys

pytestmark = pytest.mark.stack

NODE = "once1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class HeldTarget:
    """Accepts WebSocket handshakes and answers each one only once ``release`` is set; ``closed``
    is set when the relay closes the connection."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    requested: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    opened: int = 0  # handshakes received

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.opened += 1
        self.requested.set()
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        await self.release.wait()
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        await writer.drain()
        await reader.read(4096)  # the relay sends nothing unless it closes (a close frame, or EOF)
        self.closed.set()
        writer.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        s.start_valkey()
        s.start_relay(NODE, extra=["--drain-grace", "0"])
        yield s
    finally:
        s.stop()


@pytest.fixture
async def target() -> AsyncIterator[tuple[HeldTarget, int]]:
    held = HeldTarget()
    port = free_port()
    server = await asyncio.start_server(held.serve, "127.0.0.1", port)
    yield held, port
    held.release.set()
    server.close()


async def send_request(r: aioredis.Redis, request_id: str, port: int, firm_ms: int = 0) -> None:
    """A request as a router sends it; ``firm_ms``: how long from now the router waits for sure."""
    now_ms = int(time.time() * 1000)
    req = EstablishRequest(id=request_id, socket=request_id[:1].upper() * 32, target=f"ws://127.0.0.1:{port}/",
                           protocols=[], expires_at_ms=now_ms + 20_000,
                           firm_until_ms=now_ms + firm_ms if firm_ms else 0)
    await r.rpush(Keys().inbox(NODE), req.encode())


async def next_reply(r: aioredis.Redis, request_id: str) -> EstablishReply:
    item = await r.blpop([Keys().reply(request_id)], timeout=10)
    assert item is not None, "no reply from the relay"
    return EstablishReply.decode(item[1])


async def test_a_slow_open_is_acked_before_the_target_answers(stack: Stack, target: tuple[HeldTarget, int]) -> None:
    held, port = target
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        await send_request(r, "slowreq1", port)
        await asyncio.wait_for(held.requested.wait(), 10)
        assert (await next_reply(r, "slowreq1")).phase == "ack"  # while the handshake is still held
        assert not await r.exists(Keys().reply("slowreq1"))  # and nothing else yet
        held.release.set()
        done = await next_reply(r, "slowreq1")
        assert done.phase == "done" and done.ok, done
    finally:
        await r.aclose()


async def test_a_socket_opened_after_the_router_gave_up_is_closed(stack: Stack,
                                                                  target: tuple[HeldTarget, int]) -> None:
    held, port = target
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        await send_request(r, "gaveup1", port)
        assert (await next_reply(r, "gaveup1")).phase == "ack"
        await r.set(Keys().abandoned("gaveup1"), b"1", px=30_000)  # what a router that gave up does
        held.release.set()
        await asyncio.wait_for(held.closed.wait(), 10)  # the relay closed the upstream it opened
    finally:
        await r.aclose()


async def test_a_fresh_request_is_opened_without_asking_whether_the_router_gave_up(
        stack: Stack, target: tuple[HeldTarget, int]) -> None:
    """``fresh-request-unchecked``: within the time its router waits for sure, a request costs the
    relay no round trip before the open; whether the router gave up is asked once, in the answer's
    script."""
    held, port = target
    held.release.set()
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        await r.config_resetstat()
        await send_request(r, "fresh1", port, firm_ms=10_000)
        done = await next_reply(r, "fresh1")
        assert done.phase == "done" and done.ok, done
        stats = await r.info("commandstats")
        assert stats["cmdstat_exists"]["calls"] == 1  # the answer script's, nothing before the open
    finally:
        await r.aclose()


async def test_a_request_taken_after_its_router_may_have_given_up_is_checked_first(
        stack: Stack, target: tuple[HeldTarget, int]) -> None:
    """A node that takes a request past the time its router waits for sure (a node frozen with the
    request already handed to it) asks first, and opens nothing for a router that gave up."""
    held, port = target
    held.release.set()
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        await r.set(Keys().abandoned("late1"), b"1", px=30_000)  # what a router that gave up did
        await send_request(r, "late1", port, firm_ms=-1)
        await send_request(r, "after1", port, firm_ms=-1)  # behind it in the inbox, not abandoned
        done = await next_reply(r, "after1")
        assert done.phase == "done" and done.ok, done
        await asyncio.sleep(0.5)  # a late1 opened anyway would have answered by now (after1 took ~ms)
        assert not await r.exists(Keys().reply("late1"))  # skipped: no answer, no socket
        assert held.opened == 1
    finally:
        await r.aclose()
