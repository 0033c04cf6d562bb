"""The control plane with several nodes: load spreading, dead and stalled nodes, drain, timeouts."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from polysocket_cli.processes import Stack, free_port
from polysocket_core.control import Keys
from router_fn.tokens import token_id_of
from tests.support.stack import RunningStack
from tests.support.wire_client import connect, connect_raw

pytestmark = pytest.mark.stack


@pytest.fixture
def own_stack() -> Iterator[Stack]:
    """A private Valkey for tests that kill, stop or drain nodes."""
    s = Stack()
    s.start_valkey()
    try:
        yield s
    finally:
        for proc in s.procs:  # a test may leave a node SIGSTOPped
            proc.signal(signal.SIGCONT)
        s.stop()


class RecordingTarget:
    """An in-process WebSocket target that records how each connection was closed."""

    def __init__(self) -> None:
        self.closes: list[tuple[int | None, str | None]] = []
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/"

    async def handler(self, conn: ServerConnection) -> None:
        try:
            async for msg in conn:
                await conn.send(msg)
        except ConnectionClosed:
            pass
        finally:
            self.closes.append((conn.close_code, conn.close_reason))

    async def wait_closes(self, n: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.closes) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


@pytest.fixture
async def recording_target() -> AsyncIterator[RecordingTarget]:
    t = RecordingTarget()
    async with serve(t.handler, "127.0.0.1", t.port):
        yield t


def node_of(fqdn: str) -> str:
    return fqdn.split(".")[1]


async def test_two_nodes_share_load(stack: RunningStack, http: httpx.AsyncClient) -> None:
    conns = await asyncio.gather(*(stack.connect(http, stack.targets["websockets"])
                                   for _ in range(20)))
    per_node = collections.Counter(node_of(c.fqdn) for c in conns)
    assert set(per_node) == {"node1", "node2"}
    assert abs(per_node["node1"] - per_node["node2"]) <= 4, per_node
    assert len({c.fqdn.split(".")[0] for c in conns}) == 20  # a fresh uniq label per socket
    await asyncio.gather(*(c.close() for c in conns))


async def test_node_that_stops_heartbeating_gets_no_new_sockets(own_stack: Stack, http: httpx.AsyncClient,
                                                                recording_target: RecordingTarget) -> None:
    n1 = own_stack.start_relay("node1", extra=["--heartbeat-ttl", "1"])
    n2 = own_stack.start_relay("node2", extra=["--heartbeat-ttl", "1"])
    router = own_stack.start_router()
    url = f"http://127.0.0.1:{router.port}"
    token = own_stack.create_token()
    n2.signal(signal.SIGSTOP)
    await asyncio.sleep(2.0)  # past the heartbeat TTL
    conns = [await connect(http, url, recording_target.url, token=token) for _ in range(6)]
    assert {node_of(c.fqdn) for c in conns} == {"node1"}
    n2.signal(signal.SIGCONT)
    await asyncio.sleep(1.5)  # it beats again
    more = [await connect(http, url, recording_target.url, token=token) for _ in range(6)]
    assert "node2" in {node_of(c.fqdn) for c in more}
    assert n1.popen.poll() is None


async def test_stalled_node_is_skipped_within_one_connect(own_stack: Stack, http: httpx.AsyncClient,
                                                          recording_target: RecordingTarget) -> None:
    """A node still 'alive' in Redis that does not answer: the router retries the other node once."""
    own_stack.start_relay("node1", extra=["--capacity", "1000"])
    n2 = own_stack.start_relay("node2", extra=["--capacity", "1000000"])  # always the least loaded
    router = own_stack.start_router(env={"POLYSOCKET_ACK_TIMEOUT": "0.5"})
    n2.signal(signal.SIGSTOP)
    c = await connect(http, f"http://127.0.0.1:{router.port}", recording_target.url, token=own_stack.create_token())
    assert node_of(c.fqdn) == "node1"


async def test_no_relay_is_503(own_stack: Stack, http: httpx.AsyncClient) -> None:
    router = own_stack.start_router()
    answer = await connect_raw(http, f"http://127.0.0.1:{router.port}",
                               {"from": "t", "target": "ws://127.0.0.1:9/", "token": own_stack.create_token()})
    assert answer["status"] == 503 and answer["error"] == "no_relay"


async def test_sigterm_drains(own_stack: Stack, http: httpx.AsyncClient,
                              recording_target: RecordingTarget) -> None:
    node = own_stack.start_relay("node1", extra=["--drain-grace", "1"])
    router = own_stack.start_router()
    url = f"http://127.0.0.1:{router.port}"
    c = await connect(http, url, recording_target.url, token=own_stack.create_token())
    poll = asyncio.create_task(c.receive(1, ttl=10000))
    await asyncio.sleep(0.2)
    node.signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    health = (await http.get(f"http://127.0.0.1:{node.port}/healthz")).json()
    assert health["draining"] is True
    refused = await connect_raw(http, url, {"from": "t", "target": recording_target.url,
                                            "token": own_stack.create_token()})
    assert refused["error"] in ("no_relay", "draining"), refused
    got = await asyncio.wait_for(poll, 15)
    assert got[0]["type"] == "close" and got[0]["code"] == 1001
    await recording_target.wait_closes(1)
    assert recording_target.closes[0][0] == 1001
    assert node.popen.wait(15) == 0
    r = aioredis.Redis.from_url(own_stack.redis_url)
    assert await r.smembers(Keys().nodes) == set()
    assert await r.exists(Keys().node("node1")) == 0
    await r.aclose()


async def test_idle_socket_is_closed_1001_and_freed(own_stack: Stack, http: httpx.AsyncClient,
                                                    recording_target: RecordingTarget) -> None:
    own_stack.start_relay("node1", extra=["--idle-timeout", "1"])
    router = own_stack.start_router()
    c = await connect(http, f"http://127.0.0.1:{router.port}", recording_target.url, token=own_stack.create_token())
    assert (await c.poll(ttl=1500))["messages"] == [{"type": "heartbeat"}]  # a waiting poll is not idle
    await recording_target.wait_closes(1, timeout=6)
    assert recording_target.closes == [(1001, "idle timeout")]
    assert (await c.poll(ttl=0))["error"] == "unknown_socket"


async def test_unfilled_gap_fails_the_socket(own_stack: Stack, http: httpx.AsyncClient,
                                             recording_target: RecordingTarget) -> None:
    own_stack.start_relay("node1", extra=["--gap-hold", "1"])
    router = own_stack.start_router()
    c = await connect(http, f"http://127.0.0.1:{router.port}", recording_target.url, token=own_stack.create_token())
    assert (await c.send_text("second", seq=1))["ok"]  # held, waiting for seq 0
    got = await c.receive(1, ttl=10000)
    assert got[0]["type"] == "close" and got[0]["code"] == 1011
    assert "sequence gap" in got[0]["reason"]
    late = await c.send_text("first", seq=0)
    assert late["ok"] is False
    await recording_target.wait_closes(1)
    assert recording_target.closes[0][0] == 1011


async def test_full_node_gets_no_more_sockets(own_stack: Stack, http: httpx.AsyncClient,
                                              recording_target: RecordingTarget) -> None:
    own_stack.start_relay("tiny", extra=["--capacity", "1"])
    router = own_stack.start_router()
    url = f"http://127.0.0.1:{router.port}"
    token = own_stack.create_token()
    await connect(http, url, recording_target.url, token=token)
    answer = await connect_raw(http, url, {"from": "t", "target": recording_target.url, "token": token})
    assert (answer["status"], answer["error"]) == (503, "no_relay")


async def test_router_without_redis_answers_503(http: httpx.AsyncClient) -> None:
    s = Stack()
    s.redis_url = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        router = s.start_router()
        for cb in (None, "cb"):
            answer = await connect_raw(http, f"http://127.0.0.1:{router.port}",
                                       {"from": "t", "target": "ws://127.0.0.1:9/", "token": "pst_whatever-token"},
                                       cb=cb)
            assert answer["error"] == "no_relay" and "control plane" in answer["message"]
            if cb is None:
                assert answer["status"] == 503
    finally:
        s.stop()


async def test_slow_handshake_within_the_establish_budget_succeeds(own_stack: Stack,
                                                                   http: httpx.AsyncClient) -> None:
    """A target that takes 6 s to answer the upgrade: longer than redis-py's socket timeout, well
    inside the router's establish budget (15 s) and the relay's open timeout (10 s)."""
    async def slow(conn: ServerConnection, request: object) -> None:
        await asyncio.sleep(6)

    async def echo(conn: ServerConnection) -> None:
        async for msg in conn:
            await conn.send(msg)

    port = free_port()
    own_stack.start_relay("node1")
    router = own_stack.start_router()
    async with serve(echo, "127.0.0.1", port, process_request=slow):
        c = await connect(http, f"http://127.0.0.1:{router.port}", f"ws://127.0.0.1:{port}/",
                          token=own_stack.create_token())
        assert (await c.send_text("late but fine"))["ok"]
        assert [m["data"] for m in await c.receive(1)] == ["late but fine"]


async def test_request_to_a_stalled_node_is_never_opened_late(own_stack: Stack, http: httpx.AsyncClient,
                                                                    recording_target: RecordingTarget) -> None:
    node = own_stack.start_relay("node1")
    router = own_stack.start_router(env={"POLYSOCKET_ACK_TIMEOUT": "1"})
    token = own_stack.create_token()
    node.signal(signal.SIGSTOP)
    answer = await connect_raw(http, f"http://127.0.0.1:{router.port}",
                               {"from": "t", "target": recording_target.url, "token": token})
    assert answer["error"] == "timeout", answer
    node.signal(signal.SIGCONT)
    # The stopped node's pending BLPOP had already been handed the request (so it could not be
    # withdrawn); once it runs again it must see the request expired and give the reservation back.
    r = aioredis.Redis.from_url(own_stack.redis_url)
    count = -1
    for _ in range(50):
        count = int(await r.hget(Keys().node_tokens("node1"), token_id_of(token)) or 0)
        if count == 0:
            break
        await asyncio.sleep(0.1)
    await r.aclose()
    assert count == 0
    health = (await http.get(f"http://127.0.0.1:{node.port}/healthz")).json()
    assert health["sockets"] == 0
    assert recording_target.closes == []  # the target never saw a connection


async def test_redirect_to_another_origin_is_upstream_failed(stack: RunningStack, http: httpx.AsyncClient) -> None:
    """With the address pinned, websockets refuses a cross-origin redirect; the router must get a
    typed answer at once rather than wait for its timeout."""
    def redirect(conn: ServerConnection, request: object) -> object:
        response = conn.respond(302, "")
        response.headers["Location"] = "ws://localhost:9/elsewhere"
        return response

    port = free_port()
    async with serve(lambda c: c.close(), "127.0.0.1", port, process_request=redirect):  # type: ignore[arg-type,return-value]
        answer = await connect_raw(http, stack.router_url,
                                   {"from": "t", "token": stack.token, "target": f"ws://127.0.0.1:{port}/"})
    assert answer["status"] == 502 and answer["error"] == "upstream_failed", answer


async def test_metrics_token_guards_metrics(own_stack: Stack, http: httpx.AsyncClient) -> None:
    node = own_stack.start_relay("node1", env={"POLYSOCKET_METRICS_TOKEN": "s3cret-metrics"})
    url = f"http://127.0.0.1:{node.port}/metrics"
    denied = await http.get(url)
    assert denied.status_code == 401 and denied.json()["error"] == "unauthorized"
    assert (await http.get(url, headers={"authorization": "Bearer wrong"})).status_code == 401
    allowed = await http.get(url, headers={"authorization": "Bearer s3cret-metrics"})
    assert allowed.status_code == 200 and "polysocket_open_sockets" in allowed.text
    assert (await http.get(f"http://127.0.0.1:{node.port}/healthz")).status_code == 200
