"""Slot leases and the per-slot lock against a real Valkey: distinct slots, expiry of a dead holder's
lease, release on a clean stop, loss detection, mutual exclusion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from relay_node.control.aws.leases import LockTimeout, NoFreeSlot, RedisLock, SlotLease
from relay_node.control.aws.slots import SlotKeys, slot_names

KEYS = SlotKeys("lt:")


@pytest.fixture
async def redis(valkey: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(valkey)
    await r.flushdb()
    yield r
    await r.aclose()


def lease(redis: aioredis.Redis, owner: str, *, count: int = 3, ttl_s: float = 30.0,
          lost: list[str] | None = None) -> SlotLease:
    return SlotLease(redis, KEYS, slot_names(count), owner, ttl_s,
                     on_lost=(lambda: lost.append(owner)) if lost is not None else None)


async def test_nodes_lease_distinct_slots_lowest_first(redis: aioredis.Redis) -> None:
    a, b, c = (lease(redis, n) for n in ("node-a", "node-b", "node-c"))
    assert [await a.acquire(), await b.acquire(), await c.acquire()] == ["s00", "s01", "s02"]
    assert await redis.get("lt:slot:s01") == b"node-b"
    assert 29_000 < await redis.pttl("lt:slot:s01") <= 30_000
    with pytest.raises(NoFreeSlot, match="all 3 slots"):
        await lease(redis, "node-d").acquire()
    assert await b.release()  # a clean stop frees the slot at once...
    assert await redis.exists("lt:slot:s01") == 0
    assert await lease(redis, "node-d").acquire() == "s01"  # ...for the next node


async def test_concurrent_acquires_never_share_a_slot(redis: aioredis.Redis) -> None:
    leases = [lease(redis, f"node-{i}", count=8) for i in range(8)]
    slots = await asyncio.gather(*(x.acquire() for x in leases))
    assert sorted(slots) == slot_names(8)


async def test_a_dead_nodes_lease_expires(redis: aioredis.Redis) -> None:
    dead = lease(redis, "dead", count=1, ttl_s=0.6)
    assert await dead.acquire() == "s00"  # then it never refreshes: the process died
    with pytest.raises(NoFreeSlot):
        await lease(redis, "next", count=1).acquire()
    await asyncio.sleep(0.8)
    assert await lease(redis, "next", count=1).acquire() == "s00"


async def test_a_live_node_keeps_its_lease_and_a_restart_gets_it_back(redis: aioredis.Redis) -> None:
    live = lease(redis, "live", count=2, ttl_s=1.5)
    assert await live.acquire() == "s00"
    live.start()  # refreshes every 0.5 s
    await asyncio.sleep(2.5)
    assert await redis.get("lt:slot:s00") == b"live"
    await live.stop()  # the process is gone but the lease not yet expired: a restart takes it again
    assert await lease(redis, "other", count=2).acquire() == "s01"
    assert await lease(redis, "live", count=2).acquire() == "s00"


async def test_a_lost_lease_is_noticed_once_and_never_released_from_its_new_holder(
        redis: aioredis.Redis) -> None:
    lost: list[str] = []
    a = lease(redis, "a", count=1, ttl_s=0.6, lost=lost)
    assert await a.acquire() == "s00"
    await redis.set("lt:slot:s00", "b")  # a took too long: its lease expired and b holds s00 now
    a.start()
    await asyncio.sleep(0.5)
    assert lost == ["a"] and a.lost
    assert not await a.refresh() and lost == ["a"]
    assert not await a.release()
    assert await redis.get("lt:slot:s00") == b"b"


async def test_lock_is_exclusive_and_freed_by_release_or_ttl(redis: aioredis.Redis) -> None:
    one = RedisLock(redis, "lt:lock", ttl_s=0.6, poll_s=0.05)
    two = RedisLock(redis, "lt:lock", ttl_s=0.6, poll_s=0.05)
    order: list[str] = []

    async def hold(lock: RedisLock, name: str) -> None:
        async with lock.held(wait_s=5):
            order.append(f"{name}+")
            await asyncio.sleep(1.0)  # longer than the TTL: the holder's refresh keeps it
            order.append(f"{name}-")

    await asyncio.gather(hold(one, "1"), hold(two, "2"))
    assert order in (["1+", "1-", "2+", "2-"], ["2+", "2-", "1+", "1-"])
    assert await redis.exists("lt:lock") == 0

    await one.acquire(wait_s=1)  # taken and never released (the holder died)
    with pytest.raises(LockTimeout):
        await two.acquire(wait_s=0.2)
    assert not await two.release()  # not its token: nothing happens
    await two.acquire(wait_s=2)  # the TTL frees it
    assert two.waited
