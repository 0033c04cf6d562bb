"""The node scripts (polysocket_core/control.py) on a real Valkey: the pick's guarantees (capacity,
draining, dead, skip, spread), token limits from the O(1) counters (across nodes, node death, Redis
data loss), and every key of every script in one cluster slot."""

from __future__ import annotations

import asyncio
import collections
import math
import random
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from polysocket_cli.processes import Stack
from polysocket_core.control import (
    NODE_REPORT_LUA,
    PICK_CHOICES,
    PICK_FALLBACK,
    PICK_NODE_LUA,
    EstablishRequest,
    Keys,
    NodeReport,
    pick_args,
)
from tests.support.cluster import start_valkey_cluster
from tests.support.slots import key_slot

pytestmark = pytest.mark.stack

KEYS = Keys("pk:")


class Fleet:
    """Simulated nodes that report through the real script, and a router's pick."""

    def __init__(self, r: aioredis.Redis, seed: int = 1) -> None:
        self.r = r
        self.report_script = r.register_script(NODE_REPORT_LUA)
        self.pick_script = r.register_script(PICK_NODE_LUA)
        self.rng = random.Random(seed)
        self.n = 0

    async def report(self, node: str, mode: str = "beat", *, capacity: int = 100, sockets: int = 0,
                     draining: bool = False, ttl_ms: int = 60_000, counts: dict[str, int] | None = None,
                     settle: tuple[tuple[str, str], ...] = ()) -> None:
        await self.report_script(keys=KEYS.fleet, args=NodeReport(
            node, mode, ttl_ms, fqdn=f"{node}.test:1", capacity=capacity, sockets=sockets, draining=draining,
            counts=counts or {}, settle=settle).args(KEYS))

    async def pick(self, skip: tuple[str, ...] = (), token: str = "", limit: int = 0,
                   draws: list[int] | None = None) -> tuple[str, str] | None:
        self.n += 1
        req = EstablishRequest(id=f"r{self.n}", socket="s", target="ws://t/", protocols=[],
                               expires_at_ms=2**45, token_id=token)
        keys, args = pick_args(KEYS, token, limit, req.encode(),
                               draws or [self.rng.randrange(1 << 30) for _ in range(PICK_CHOICES)], skip)
        got = await self.pick_script(keys=keys, args=args)
        if not got:
            return None
        return got[0].decode(), got[1].decode()


@pytest.fixture(scope="module", params=["single", "cluster"])
def valkey(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """One Valkey, or a cluster of three primaries (where a script that touched keys of two slots
    would fail: the cluster refuses it)."""
    s = Stack()
    try:
        if request.param == "cluster":
            yield "cluster", start_valkey_cluster(s)[0]
        else:
            yield "single", s.start_valkey().port
    finally:
        s.stop()


@pytest.fixture
async def fleet(valkey: tuple[str, int]) -> AsyncIterator[Fleet]:
    kind, port = valkey
    r: aioredis.Redis = (RedisCluster(host="127.0.0.1", port=port) if kind == "cluster"  # type: ignore[assignment]
                         else aioredis.Redis(port=port))
    await r.flushall()
    yield Fleet(r)
    await r.aclose()


async def test_never_over_capacity_and_skips_draining_dead_and_retried(fleet: Fleet) -> None:
    await fleet.report("a", "register", capacity=3)
    await fleet.report("b", "register", capacity=3)
    await fleet.report("drained", "register", capacity=100, draining=True)
    await fleet.report("dead", "register", capacity=100, ttl_ms=1)
    await fleet.r.delete(KEYS.alive("dead"))  # what the TTL does
    await asyncio.sleep(0.01)
    picked = [await fleet.pick() for _ in range(7)]
    assert collections.Counter(p[1] for p in picked if p) == {"a": 3, "b": 3}
    assert picked[-1] is None  # full: never over capacity
    assert await fleet.r.llen(KEYS.inbox("a")) == 3
    await fleet.report("a", capacity=3, sockets=0)
    assert [await fleet.pick(skip=("a",)) for _ in range(2)] == [None, None]  # the retry skips "a"
    assert (await fleet.pick())[1] == "a"  # type: ignore[index]


async def test_between_heartbeats_the_less_picked_wins_then_the_less_loaded(fleet: Fleet) -> None:
    await fleet.report("a", "register", capacity=10, sockets=5)
    await fleet.report("b", "register", capacity=10, sockets=0)
    # Reported alike (nothing picked since): the less loaded, every time a heartbeat came between.
    for sockets in range(1, 4):
        assert (await fleet.pick())[1] == "b"  # type: ignore[index]
        await fleet.report("b", capacity=10, sockets=sockets)
    # No heartbeat between: "b" was picked since its last one, "a" was not: "a" takes the next.
    assert [(await fleet.pick())[1] for _ in range(2)] == ["b", "a"]  # type: ignore[index]
    assert await fleet.r.hmget(KEYS.node("a"), "sockets", "picked") == [b"6", b"1"]
    await fleet.report("a", capacity=10, sockets=6)
    assert await fleet.r.hget(KEYS.node("a"), "picked") == b"0"  # every report resets it


async def test_draws_choose_the_candidates(fleet: Fleet) -> None:
    for i in range(10):
        await fleet.report(f"n{i}", "register", capacity=100, sockets=10 + i)
    # ranks 7 and 9 (of the nodes sorted by load): n7 and n9 are drawn, the less loaded wins
    assert (await fleet.pick(draws=[7, 8]))[1] == "n7"  # type: ignore[index]
    assert (await fleet.pick(draws=[9, 0]))[1] == "n0"  # type: ignore[index]


async def test_an_empty_node_gets_a_bounded_share(fleet: Fleet) -> None:
    """Scale-out: a node joining a fleet of loaded ones fills faster than the others (it wins the
    ties on ``picked``, reset by each heartbeat), but takes at most 2 x the mean share, not every
    connect (strict least-loaded would send it all of the first 500), nor the PICK_CHOICES x a
    pick by load alone gives it (the draws are seeded: the run is the same every time)."""
    nodes = [f"n{i}" for i in range(50)] + ["new"]
    for node in nodes:
        await fleet.report(node, "register", capacity=1000, sockets=0 if node == "new" else 500)
    share = collections.Counter()
    for _beat in range(10):
        for _ in range(len(nodes)):  # about one connect per node between two heartbeats
            got = await fleet.pick()
            assert got is not None
            share[got[1]] += 1
        for node in nodes:
            await fleet.report(node, capacity=1000, sockets=int(await fleet.r.hget(KEYS.node(node), "sockets")))
    mean = 10 * len(nodes) / len(nodes)
    assert mean < share["new"] <= 2 * mean, share


async def test_token_limit_across_nodes_and_after_death(fleet: Fleet) -> None:
    await fleet.report("a", "register", counts={"t": 2}, ttl_ms=60_000)
    await fleet.report("b", "register", counts={"t": 1}, ttl_ms=60_000)
    assert await fleet.r.hget(KEYS.used, "t") == b"3"
    assert (await fleet.pick(token="t", limit=4))[0] == "ok"  # type: ignore[index]  # 3 + this reservation
    assert await fleet.pick(token="t", limit=4) == ("limit", "4")
    # "a" takes the reservation and settles it: it moves from resv to its counts, still 4
    req_id = (await fleet.r.zrange(KEYS.reservations("t"), 0, -1))[0].decode()
    await fleet.report("a", counts={"t": 3}, settle=(("t", req_id),))
    assert await fleet.r.zcard(KEYS.reservations("t")) == 0
    assert await fleet.pick(token="t", limit=4) == ("limit", "4")
    # "b" dies: once its deadline passes the next script retires it and its count stops counting
    await fleet.report("b", counts={"t": 1}, ttl_ms=1)
    await fleet.r.delete(KEYS.alive("b"))
    await asyncio.sleep(0.01)  # past its deadline
    assert (await fleet.pick(token="t", limit=4)) == ("ok", "a")
    assert await fleet.r.hget(KEYS.used, "t") == b"3"
    assert await fleet.r.exists(KEYS.node_tokens("b")) == 0
    # a reservation picked for a node that dies stops counting with it, not at its expiry
    await fleet.report("c", "register", ttl_ms=200, capacity=10)
    await fleet.report("a", capacity=1, sockets=1, counts={"t": 3})  # full: the pick must take "c"
    assert await fleet.pick(token="t", limit=5) == ("ok", "c")
    assert await fleet.pick(token="t", limit=5) == ("limit", "5")
    await fleet.r.delete(KEYS.alive("c"))
    await asyncio.sleep(0.25)
    await fleet.report("a", capacity=10, sockets=1, counts={"t": 3})  # any script retires "c"
    assert await fleet.r.zcard(KEYS.reservations("t")) == 1  # a's, picked above; c's went with c
    assert await fleet.r.exists(KEYS.node_reservations("c")) == 0
    # "b" comes back: counted again, once
    await fleet.report("b", counts={"t": 1})
    await fleet.report("b", counts={"t": 1})
    assert await fleet.r.hget(KEYS.used, "t") == b"4"
    await fleet.report("b", "leave")
    assert await fleet.r.hget(KEYS.used, "t") == b"3"
    assert not await fleet.r.sismember(KEYS.nodes, "b") and await fleet.r.zscore(KEYS.live, "b") is None


async def test_counts_exact_after_redis_loses_its_data(fleet: Fleet) -> None:
    await fleet.report("a", "register", counts={"t": 2, "u": 1})
    await fleet.report("b", "register", counts={"t": 1})
    await fleet.r.flushall()
    await fleet.report("a", counts={"t": 2, "u": 1})
    await fleet.report("b", counts={"t": 1})
    await fleet.report("a", counts={"t": 1, "u": 1})
    assert await fleet.r.hgetall(KEYS.used) == {b"t": b"2", b"u": b"1"}
    await fleet.report("a", counts={"u": 1})
    assert await fleet.r.hgetall(KEYS.used) == {b"t": b"1", b"u": b"1"}
    assert (await fleet.pick())[0] == "ok"  # type: ignore[index]


@pytest.mark.parametrize("valkey", ["single"], indirect=True)  # MONITOR is one node's; on the cluster the
async def test_every_key_the_scripts_touch_is_in_one_slot(fleet: Fleet) -> None:  # other tests check the slots
    """Watch Valkey run both scripts (MONITOR) and hash every key they name: one slot."""
    await fleet.report("a", "register", counts={"t": 1})
    touched: set[bytes] = set()
    async with fleet.r.monitor() as mon:
        await fleet.report("b", "register", counts={"t": 1}, ttl_ms=1)
        await fleet.r.delete(KEYS.alive("b"))
        await fleet.pick(token="t", limit=10)
        await fleet.report("a", counts={"t": 2}, settle=(("t", "r1"),))
        await fleet.report("a", "leave")
        await fleet.r.ping()
        async for info in mon.listen():
            cmd = info["command"]
            if cmd == "PING":
                break
            parts = cmd.split(" ")
            if info.get("client_type") != "lua" or parts[0] == "TIME":
                continue  # only what the scripts ran
            touched.add(parts[1].strip('"').encode())
    assert len(touched) >= 12, touched
    assert {key_slot(k) for k in touched} == {key_slot(KEYS.live.encode())}, touched


async def test_a_mass_death_does_not_hide_the_live_nodes(fleet: Fleet) -> None:
    """90 of 100 nodes die at once, the least loaded: until they are retired the index still lists
    them. A pick whose candidates are all dead falls back to the PICK_FALLBACK least-loaded in
    order, dropping every dead one it meets, so at most 90 / PICK_FALLBACK picks find no node."""
    for i in range(100):
        await fleet.report(f"n{i:03d}", "register", capacity=100, sockets=0 if i < 90 else 50)
    await fleet.r.delete(*(KEYS.alive(f"n{i:03d}") for i in range(90)))
    picked = [await fleet.pick() for _ in range(20)]
    assert picked.count(None) <= math.ceil(90 / PICK_FALLBACK), picked
    assert picked[-1] is not None and all(p[1] >= "n090" for p in picked if p), picked
