"""Issue 19, item 6: routers SIGKILLed mid-connect leave no orphan on the relay.

A router killed between the pick and its answer to the browser (a Lambda timeout or crash
mid-connect) never hands the socket on; the relay opens it anyway. What is promised
(docs/guarantees.md, "Unclaimed sockets"): a socket no client request has named by its claim
deadline (the establish request's expiry plus ``RelayConfig.claim_margin_s``) is closed with 1001
and freed, its token reservation given back, long before the 60 s idle timeout that held it
before; sockets the browsers claimed, a slow first request within the margin included, are not
cut; a browser later than the deadline gets ``unknown_socket`` (polysocket.js: its close event,
1006), not a hang.

Real processes on loopback: Valkey, one relay, three routers; the target is a WebSocket server in
this test whose handshakes are held while the burst is in flight, so every connect of the burst is
mid-connect (picked, taken by the relay, waiting for the target) when two routers are SIGKILLed by
their PID. Only processes this test started are signalled, by their handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from polysocket_cli.processes import Stack
from polysocket_core.control import Keys
from router_fn.tokens import token_id_of
from tests.support.wire_client import Conn, connect

from .conftest import alive, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.faults]

BURST = 12  # connects in flight through the routers that are killed (6 each)
NODE_TIMEOUT_S = 5.0  # the routers' --node-timeout: the establish request expires this long after the pick
OPEN_TIMEOUT_S = 4.0  # the relay's --open-timeout (the held handshakes fit in it), hence its claim margin
IDLE_TIMEOUT_S = 60.0  # the relay's default: how long an orphan lived before the claim deadline
# The orphans must be gone well before the idle timeout: by the expiry, the margin and a sweep
# (≈ 10 s) with generous room for a loaded machine, and still far below what it was (60 s).
ORPHANS_GONE_WITHIN_S = 30.0


@dataclass
class HeldTarget:
    """Echoes; while ``hold`` is clear, every handshake waits for it (counted in ``waiting``)."""

    hold: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0
    open: int = 0
    url: str = ""

    async def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if not self.hold.is_set():
            self.waiting += 1
            await self.hold.wait()
        return None

    async def handler(self, conn: ServerConnection) -> None:
        self.open += 1
        try:
            async for msg in conn:
                await conn.send(msg)
        finally:
            self.open -= 1


@pytest.fixture
async def target() -> AsyncIterator[HeldTarget]:
    t = HeldTarget()
    t.hold.set()
    async with serve(t.handler, "127.0.0.1", 0, process_request=t.process_request) as server:
        t.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        try:
            yield t
        finally:
            t.hold.set()


async def relay_sockets(http: httpx.AsyncClient, port: int) -> int:
    return int((await http.get(f"http://127.0.0.1:{port}/healthz")).json()["sockets"])


async def held_in_redis(redis_url: str, node: str, token: str) -> tuple[int, int]:
    """(sockets the node counts for the token, reservations still pending in the token's set)."""
    r = aioredis.Redis.from_url(redis_url)
    keys = Keys()
    try:
        counted = int(await r.hget(keys.node_tokens(node), token_id_of(token)) or 0)
        pending = int(await r.zcard(keys.reservations(token_id_of(token))))
        return counted, pending
    finally:
        await r.aclose()


async def echo_once(c: Conn, text: str) -> None:
    assert (await c.send_text(text))["ok"]
    got = await c.receive(1)
    assert got[0]["data"] == text, got


async def test_routers_killed_mid_connect_leave_no_orphan(own_stack: Stack, http: httpx.AsyncClient,
                                                          target: HeldTarget) -> None:
    relay = own_stack.start_relay("n1", extra=["--heartbeat-ttl", "1", "--open-timeout", str(OPEN_TIMEOUT_S),
                                               "--idle-timeout", str(IDLE_TIMEOUT_S)])
    env = {"POLYSOCKET_ACK_TIMEOUT": "1", "POLYSOCKET_NODE_TIMEOUT": str(NODE_TIMEOUT_S),
           "POLYSOCKET_ESTABLISH_TIMEOUT": str(NODE_TIMEOUT_S + 1), "POLYSOCKET_RATE_PER_IP": "10000/60"}
    doomed = [own_stack.start_router(env=env) for _ in range(2)]
    survivor = f"http://127.0.0.1:{own_stack.start_router(env=env).port}"
    token = own_stack.create_token()

    # Browsers that claimed their sockets before the burst: they must not be cut.
    claimed = [await connect(http, survivor, target.url, token=token) for _ in range(3)]
    for i, c in enumerate(claimed):
        await echo_once(c, f"before:{i}")

    # The burst: every connect is picked, taken by the relay and waiting for the target's answer
    # when its router dies.
    target.hold.clear()
    burst = [asyncio.create_task(connect(http, f"http://127.0.0.1:{doomed[i % 2].port}", target.url, token=token))
             for i in range(BURST)]
    await wait_until(holds(lambda: target.waiting >= BURST), 20, "every connect of the burst at the target")
    for router in doomed:
        router.signal(signal.SIGKILL)  # by the PID of the process this test started
    killed = time.monotonic()  # just after the burst's picks
    # A browser connecting through the surviving router during the burst, slow to make its first
    # request: its socket is opened with the orphans, and claimed within the margin.
    slow = asyncio.create_task(connect(http, survivor, target.url, token=token))
    await wait_until(holds(lambda: target.waiting >= BURST + 1), 20, "the slow browser's connect at the target")
    # and one that never makes a request in time (its page went away, or its network is that slow)
    late = asyncio.create_task(connect(http, survivor, target.url, token=token))
    await wait_until(holds(lambda: target.waiting >= BURST + 2), 20, "the late browser's connect at the target")
    target.hold.set()
    for task in burst:
        with contextlib.suppress(httpx.HTTPError):  # the router died under it: no answer
            await task
    assert not any(alive(r) for r in doomed)
    slow_conn, late_conn = await slow, await late

    # The relay opened them all: the orphans exist (this is what the test must be able to fail on).
    expected_live = len(claimed) + 2
    await wait_until(relay_holds(http, relay.port, expected_live + BURST), 10, "the orphans opened on the relay")
    await asyncio.sleep(1.0)  # the slow browser's first request comes a second after its answer
    await echo_once(slow_conn, "slow:0")

    await wait_until(relay_holds(http, relay.port, len(claimed) + 1), ORPHANS_GONE_WITHIN_S,
                     "every unclaimed socket freed by its claim deadline")
    freed_after = time.monotonic() - killed
    print(f"\n{BURST} orphans (+1 late browser) freed {freed_after:.1f}s after the routers were killed "
          f"(claim deadline: expiry {NODE_TIMEOUT_S:g}s after the pick + margin {OPEN_TIMEOUT_S:g}s; idle timeout "
          f"{IDLE_TIMEOUT_S:g}s)")

    # Their reservations too: after the next heartbeats the node counts only the claimed sockets
    # for the token, and nothing is left pending in the token's reservation set.
    async def only_claimed_counted() -> bool:
        return await held_in_redis(own_stack.redis_url, "n1", token) == (len(claimed) + 1, 0)

    await wait_until(only_claimed_counted, 10, "the orphans' reservations released in Redis")
    # the target's connections of the orphans were closed too
    await wait_until(holds(lambda: target.open == len(claimed) + 1), 10, "the orphans' target connections closed")

    # The browsers that claimed theirs, the slow one included, carry on.
    for i, c in enumerate([*claimed, slow_conn]):
        await echo_once(c, f"after:{i}")
    # The late browser gets a typed error (polysocket.js: close event 1006), not a hang.
    answer = await late_conn.poll(ttl=0)
    assert answer["ok"] is False and answer["error"] == "unknown_socket", answer


def holds(pred: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A condition for ``wait_until`` that needs no I/O."""
    async def cond() -> bool:
        return pred()
    return cond


def relay_holds(http: httpx.AsyncClient, port: int, count: int) -> Callable[[], Awaitable[bool]]:
    async def cond() -> bool:
        return await relay_sockets(http, port) == count
    return cond
