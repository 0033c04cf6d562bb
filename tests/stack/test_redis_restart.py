"""Valkey restarting empty under live sockets: token limits heal (D2), the relay's connections
recover and an establish that cannot be answered leaves no upstream open (D3)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from polysocket_cli.processes import Proc, free_port
from polysocket_core.control import Keys
from router_fn.tokens import token_id_of
from tests.support.valkey import RestartableValkey
from tests.support.wire_client import Conn, connect, connect_raw

pytestmark = pytest.mark.stack


class ValkeyStack(RestartableValkey):
    def router(self) -> str:
        return f"http://127.0.0.1:{self.stack.start_router().port}"


@pytest.fixture
def vs() -> Iterator[ValkeyStack]:
    v = ValkeyStack()
    try:
        yield v
    finally:
        v.stack.stop()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[int | None]]]:
    closes: list[int | None] = []
    port = free_port()

    async def handler(conn: ServerConnection) -> None:
        try:
            async for msg in conn:
                await conn.send(msg)
        except ConnectionClosed:
            pass
        closes.append(conn.close_code)

    async with serve(handler, "127.0.0.1", port):
        yield f"ws://127.0.0.1:{port}/", closes


async def token_count(redis_url: str, token: str) -> list[int]:
    r = aioredis.Redis.from_url(redis_url)
    try:
        counts = []
        for node in await r.smembers(Keys().nodes):
            raw = await r.hget(Keys().node_tokens(node.decode()), token_id_of(token))
            counts.append(int(raw or 0))
        return counts
    finally:
        await r.aclose()


async def wait_registered(redis_url: str, node: str, timeout: float = 10) -> None:
    r = aioredis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while not await r.exists(Keys().alive(node)):
            assert time.monotonic() < deadline, "the node did not re-register"
            await asyncio.sleep(0.1)
    finally:
        await r.aclose()


async def close_and_ack(c: Conn) -> None:
    await c.close()
    await c.receive(1)
    await c.poll(ttl=0)


async def test_token_limit_holds_after_valkey_restarts_empty(vs: ValkeyStack, http: httpx.AsyncClient,
                                                             echo: tuple[str, list[int | None]]) -> None:
    target, _ = echo
    vs.stack.start_relay("node1", extra=["--heartbeat-ttl", "1"])
    router = vs.router()
    token = vs.stack.create_token(max_sockets=3)
    conns = [await connect(http, router, target, token=token) for _ in range(3)]
    vs.restart_empty()
    vs.stack.create_token(max_sockets=3, value=token)  # the operator restores the token
    await wait_registered(vs.stack.redis_url, "node1")
    await asyncio.sleep(1.0)  # a few heartbeats
    router = vs.router()  # a fresh router: this test is about the counts, not the router's pool
    for _ in range(3):  # the three live sockets are counted again: nothing more is admitted
        answer = await connect_raw(http, router, {"from": "t", "target": target, "token": token})
        assert answer.get("error") == "limit_exceeded", answer
    assert await token_count(vs.stack.redis_url, token) == [3]
    # Freeing sockets brings the count down to zero, never below, and the limit is the limit.
    for c in conns:
        await close_and_ack(c)
    await asyncio.sleep(1.0)
    assert await token_count(vs.stack.redis_url, token) == [0]
    again = [await connect(http, router, target, token=token) for _ in range(3)]
    answer = await connect_raw(http, router, {"from": "t", "target": target, "token": token})
    assert answer.get("error") == "limit_exceeded", answer
    assert len(again) == 3


async def test_relay_recovers_its_redis_connections_after_a_restart(vs: ValkeyStack, http: httpx.AsyncClient,
                                                                    echo: tuple[str, list[int | None]]) -> None:
    target, _ = echo
    vs.stack.start_relay("node1", extra=["--heartbeat-ttl", "1"])
    router = vs.router()
    token = vs.stack.create_token()
    # Several establishes at once grow the relay's connection pool.
    first = await asyncio.gather(*(connect(http, router, target, token=token) for _ in range(8)))
    assert len(first) == 8
    vs.restart_empty()
    vs.stack.create_token(value=token)
    await wait_registered(vs.stack.redis_url, "node1")
    router = vs.router()
    answers = await asyncio.gather(*(connect_raw(http, router, {"from": "t", "target": target, "token": token})
                                     for _ in range(8)))
    assert all(a.get("ok") for a in answers), answers
    c = first[0]
    assert (await c.send_text("still here"))["ok"]
    assert [m["data"] for m in await c.receive(1)] == ["still here"]


async def test_unanswerable_establish_closes_the_upstream_and_releases(vs: ValkeyStack,
                                                                      http: httpx.AsyncClient) -> None:
    """Valkey dies while the relay opens the upstream, so its final 'done' reply cannot be sent: the
    relay must close the upstream it opened and give the token's reservation back."""
    closes: list[int | None] = []
    opened = asyncio.Event()

    async def slow(conn: ServerConnection, request: object) -> None:
        opened.set()
        await asyncio.sleep(1.0)

    async def handler(conn: ServerConnection) -> None:
        try:
            async for msg in conn:
                await conn.send(msg)
        except ConnectionClosed:
            pass
        closes.append(conn.close_code)

    port = free_port()
    relay: Proc = vs.stack.start_relay("node1", extra=["--heartbeat-ttl", "1"])
    router = vs.router()
    token = vs.stack.create_token(max_sockets=1)
    async with serve(handler, "127.0.0.1", port, process_request=slow):
        attempt = asyncio.create_task(connect_raw(http, router, {"from": "t", "token": token,
                                                                 "target": f"ws://127.0.0.1:{port}/"}))
        await asyncio.wait_for(opened.wait(), 10)
        await asyncio.to_thread(vs.restart_empty, 8.0)  # down longer than the relay's retries
        answer = await attempt
        assert answer.get("ok") is not True, answer
        deadline = time.monotonic() + 10
        while not closes and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    assert closes == [1001]  # the relay closed the upstream nobody will use
    vs.stack.create_token(max_sockets=1, value=token)
    await wait_registered(vs.stack.redis_url, "node1")
    await asyncio.sleep(1.0)
    assert await token_count(vs.stack.redis_url, token) == [0]
    health = (await http.get(f"http://127.0.0.1:{relay.port}/healthz")).json()
    assert health["sockets"] == 0
