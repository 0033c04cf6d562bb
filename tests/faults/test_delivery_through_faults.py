"""Exactly-once, in-order delivery both ways while a proxy between client and relay drops 20 % of
the answers after the relay processed the request, delays 20 % and resets 20 % of the connections
(issue 10: "0 lost, 0 duplicated, in order"). The client retries as polysocket.js does; the target
records what it receives and pushes its own numbered messages meanwhile."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from polysocket_cli.processes import Stack, free_port
from tests.support.wire_client import connect

from .conftest import Profile, current_profile, seed_for
from .proxy import FaultProxy, FaultRates
from .reliable import Message, ReliableSocket

pytestmark = [pytest.mark.stack, pytest.mark.faults]

PROFILE = current_profile()


def client_messages(n: int, rng: random.Random) -> list[Message]:
    out: list[Message] = []
    for i in range(n):
        if i % 5 == 4:
            out.append(("binary", i.to_bytes(4, "big") + rng.randbytes(rng.randint(0, 300))))
        else:
            out.append(("text", f"c-{i}-" + "é✓😀\u2028"[i % 4] * rng.randint(0, 200)))
    return out


def target_messages(n: int) -> list[Message]:
    return [("binary", f"s-{i}".encode()) if i % 7 == 6 else ("text", f"s-{i}") for i in range(n)]


class PushingTarget:
    """Records every message it receives; pushes its own ``n`` messages in bursts meanwhile."""

    def __init__(self, n: int, seed: int) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.pushes = target_messages(n)
        self.received: list[Message] = []
        self.closes: list[int | None] = []
        self.rng = random.Random(seed)

    async def handler(self, conn: ServerConnection) -> None:
        async def push() -> None:
            for i, (_, data) in enumerate(self.pushes):
                await conn.send(data)
                if i % self.rng.randint(1, 50) == 0:
                    await asyncio.sleep(self.rng.random() * 0.01)

        pusher = asyncio.create_task(push())
        try:
            async for msg in conn:
                self.received.append(("text", msg) if isinstance(msg, str) else ("binary", msg))
        except ConnectionClosed:
            pass
        finally:
            pusher.cancel()
            self.closes.append(conn.close_code)


@pytest.fixture
async def pushing_target() -> AsyncIterator[PushingTarget]:
    t = PushingTarget(PROFILE.messages_each_way, seed=7)
    async with serve(t.handler, "127.0.0.1", t.port, compression=None):
        yield t


@pytest.mark.timeout(90 if PROFILE.name == "ci" else 900)
async def test_nothing_lost_duplicated_or_reordered_through_a_faulty_network(
        own_stack: Stack, http: httpx.AsyncClient, pushing_target: PushingTarget, profile: Profile) -> None:
    seed = seed_for("PSTEST_FAULT_SEED")
    n = profile.messages_each_way
    relay = own_stack.start_relay("fp")
    router = f"http://127.0.0.1:{own_stack.start_router().port}"
    token = own_stack.create_token()
    rng = random.Random(seed)
    sent = client_messages(n, rng)
    async with FaultProxy(relay.port, FaultRates(), seed) as proxy:
        conn = await connect(http, router, pushing_target.url, token=token)
        rs = ReliableSocket(proxy.port, conn.fqdn, conn.socket, random.Random(seed + 1))
        try:
            sender = asyncio.create_task(rs.send_all(sent, window=8))
            got = await rs.receive(n)
            await sender
            close = await rs.close_and_collect()
        finally:
            rs.shutdown()
    stats = proxy.stats
    print(f"{n} messages each way; proxy: {stats.summary()}; client retried {rs.failed_by_path} "
          f"(a lost poll answer is delivered again by the next poll)")
    assert pushing_target.received == sent  # the target got every send once, in order
    assert got == pushing_target.pushes  # the client got every message once, in order
    assert close["code"] == 1000 and close["reason"] == "done", close
    assert pushing_target.closes == [1000]
    # The faults really happened, on sends and on polls.
    assert min(stats.dropped, stats.delayed, stats.reset_before + stats.reset_after) >= stats.requests // 10
    assert stats.by_path.get("/send", 0) > n and stats.by_path.get("/poll", 0) > 10
    health = (await http.get(f"http://127.0.0.1:{relay.port}/healthz")).json()
    assert health["sockets"] == 0  # the acknowledged close freed the socket
