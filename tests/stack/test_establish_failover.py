"""D8: a connect whose relay node froze after taking the request is retried on another node
within the node's heartbeat TTL, instead of waiting out the whole establish budget (15 s).

Real processes: Valkey, two relay nodes (heartbeat TTL 1 s) and the router. The target is a
WebSocket server in this test whose first handshake never completes, so the node that takes the
first request is busy opening it when the test SIGSTOPs that node (found by the token reservation
the pick made on it). Only processes this test started are signalled, by their handle.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from polysocket_cli.processes import Proc, Stack
from polysocket_core.control import NODE_REPORT_LUA, EstablishReply, EstablishRequest, Keys, NodeReport, decode_inbox
from router_fn.admission import Admitted
from router_fn.establish import Establisher
from tests.support.wire_client import connect_raw

pytestmark = pytest.mark.stack


@dataclass
class FailoverStack:
    stack: Stack
    relays: dict[str, Proc]
    router: str
    token: str


@pytest.fixture(scope="module")
def fo() -> Iterator[FailoverStack]:
    s = Stack()
    try:
        s.start_valkey()
        relays = {n: s.start_relay(n, extra=["--heartbeat-ttl", "1"]) for n in ("node1", "node2")}
        router = s.start_router()
        yield FailoverStack(s, relays, f"http://127.0.0.1:{router.port}", s.create_token())
    finally:
        for proc in s.procs:  # never leave a process of ours stopped
            proc.signal(signal.SIGCONT)
        s.stop()


async def reserved_on(redis_url: str, nodes: list[str]) -> str | None:
    """The node holding this test's token (the only token in this Valkey): the node that took the
    request counts it in the token counts it publishes with its next heartbeat (docs/protocol.md)."""
    r = aioredis.Redis.from_url(redis_url)
    keys = Keys()
    try:
        for _ in range(40):  # a few heartbeat intervals
            for node in nodes:
                counts = await r.hgetall(keys.node_tokens(node))
                if any(int(v) > 0 for v in counts.values()):
                    return node
            await asyncio.sleep(0.05)
        return None
    finally:
        await r.aclose()


async def test_frozen_node_after_ack_is_left_for_another(fo: FailoverStack) -> None:
    first_seen = asyncio.Event()
    release = asyncio.Event()
    handshakes = 0

    async def process_request(conn: ServerConnection, request: Request) -> Response | None:
        nonlocal handshakes
        handshakes += 1
        if handshakes == 1:  # the first node's handshake hangs until the test ends
            first_seen.set()
            await release.wait()
        return None

    async def echo(ws: ServerConnection) -> None:
        async for msg in ws:
            await ws.send(msg)

    stopped: Proc | None = None
    async with serve(echo, "127.0.0.1", 0, process_request=process_request) as server:
        port = server.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(timeout=30) as http:
            started = time.monotonic()
            task = asyncio.create_task(connect_raw(
                http, fo.router, {"from": "pytest", "target": f"ws://127.0.0.1:{port}/", "token": fo.token}))
            try:
                await asyncio.wait_for(first_seen.wait(), 10)
                frozen = await reserved_on(fo.stack.redis_url, list(fo.relays))
                assert frozen is not None
                stopped = fo.relays[frozen]
                stopped.signal(signal.SIGSTOP)
                answer = await asyncio.wait_for(task, 20)
                elapsed = time.monotonic() - started
            finally:
                if stopped is not None:
                    stopped.signal(signal.SIGCONT)
                release.set()
    assert answer.get("ok") is True, answer
    other = next(n for n in fo.relays if n != frozen)
    assert str(answer["fqdn"]).split(".")[1] == other
    # Before: the router waited out the 15 s establish budget and answered 504 timeout.
    assert elapsed < 8, elapsed


@pytest.fixture
async def valkey_redis() -> AsyncIterator[aioredis.Redis]:
    s = Stack()
    try:
        s.start_valkey()
        client = aioredis.Redis.from_url(s.redis_url)
        yield client
        await client.aclose()
    finally:
        s.stop()


async def fake_node(r: aioredis.Redis, node_id: str, answer: bool, seen: list[EstablishRequest],
                    stop: asyncio.Event) -> None:
    """A node on the real control plane that heart-beats and acks but (unless ``answer``) never
    finishes: the stuck-after-ack case the heartbeat alone cannot reveal."""
    keys = Keys()
    report = r.register_script(NODE_REPORT_LUA)
    mode = "register"
    while not stop.is_set():  # (not cancelled: a cancelled BLPOP can wedge redis-py's connection)
        await report(keys=keys.fleet, args=NodeReport(
            node_id, mode, ttl_ms=1000, fqdn=f"{node_id}.localhost:1", capacity=10,
            sockets=1 if answer else 0).args(keys))
        mode = "beat"
        item = await r.blpop([keys.inbox(node_id)], timeout=0.2)
        if item is None:
            continue
        req = decode_inbox(item[1])
        assert isinstance(req, EstablishRequest)
        seen.append(req)
        await r.rpush(keys.reply(req.id), EstablishReply(phase="ack").encode())
        if answer:
            await r.rpush(keys.reply(req.id), EstablishReply(phase="done", ok=True, protocol="").encode())


async def test_per_node_wait_is_bounded_and_carried_as_expiry(valkey_redis: aioredis.Redis) -> None:
    r = valkey_redis
    stuck_seen: list[EstablishRequest] = []
    good_seen: list[EstablishRequest] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(fake_node(r, "stuck", False, stuck_seen, stop)),
             asyncio.create_task(fake_node(r, "good", True, good_seen, stop))]
    try:
        await asyncio.sleep(0.1)
        est = Establisher(r, Keys(), ack_timeout_s=0.5, establish_timeout_s=10, node_timeout_s=1.5)
        started = time.monotonic()
        result = await est.establish("ws://127.0.0.1:9/", [], "pytest", Admitted())
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert result.node_id == "good" and len(stuck_seen) == 1 and len(good_seen) == 1
    assert 1.4 < elapsed < 3, elapsed
    # The stuck node was told the request expires when the router stops waiting for it, so if it
    # ever finishes it drops the socket instead of leaving it open for nobody.
    budget_ms = stuck_seen[0].expires_at_ms - int(time.time() * 1000 - elapsed * 1000)
    assert 1000 < budget_ms < 2000, budget_ms
    # Until its ack timeout (0.5 s from the pick) a router gives up on a request only by taking it
    # back from the inbox, so a node that takes it sooner need not ask (``fresh-request-unchecked``).
    for seen in (stuck_seen[0], good_seen[0]):
        assert seen.firm_until_ms < seen.expires_at_ms
        assert 400 <= seen.firm_until_ms - (seen.expires_at_ms - 1500) <= 600, seen
