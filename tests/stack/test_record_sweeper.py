"""The record sweeper's Redis side against a real Valkey: one relay sweeps at a time (the lock), the
fleet about once per interval (the recent mark), and what counts as live. Route 53 is never reached
in these tests: the sweeper is given a client that fails the test if it is used at all (the sweeps
that do reach Route 53 are in tests/cloud/test_sweeper.py, against LocalStack)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

import pytest
import redis.asyncio as aioredis

from polysocket_core.control import Keys
from relay_node.control.aws.leases import RedisLock
from relay_node.control.aws.settings import CloudSettings
from relay_node.control.aws.sweeper import LOCK_TTL_S, RecordSweeper

pytestmark = pytest.mark.stack

KEYS = Keys("rs:")


class NoRoute53:
    """A Route 53 client that must not be used: a tick that should skip and does not fails here."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"Route 53 reached ({name}) by a tick that had to skip")


@pytest.fixture
async def redis(valkey_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(valkey_url)
    await client.flushall()
    yield client
    await client.aclose()


def sweeper(redis: aioredis.Redis, **kw: Any) -> RecordSweeper:
    return RecordSweeper(redis, KEYS, zone_id="Z1", own_fqdn="me.relay.test:443", interval_s=60, grace_s=120,
                         route53=NoRoute53(), **kw)


async def test_a_tick_skips_while_another_relay_holds_the_lock(redis: aioredis.Redis) -> None:
    other = RedisLock(redis, KEYS.sweep_lock, ttl_s=LOCK_TTL_S)
    assert await other.try_acquire()
    s = sweeper(redis)
    assert await s.tick() is None  # would have listed the zone (and failed here) had it swept
    assert await redis.get(KEYS.sweep_lock) == other.token.encode()  # the holder's lock is untouched
    assert s.lock.token != other.token and await redis.pttl(KEYS.sweep_lock) > 0
    assert await other.release()
    assert not await s.lock.release()  # compare-and-delete: nothing of ours to delete


async def test_a_tick_skips_when_the_fleet_swept_lately(redis: aioredis.Redis) -> None:
    await redis.set(KEYS.sweep_recent, "1", px=60_000)
    s = sweeper(redis)
    assert await s.tick() is None
    assert await redis.exists(KEYS.sweep_lock) == 0  # not even the lock was taken


async def test_live_names_are_alive_nodes_leased_slots_and_itself(redis: aioredis.Redis) -> None:
    for node, alive in (("a", True), ("b", False)):
        await redis.sadd(KEYS.nodes, node)
        await redis.hset(KEYS.node(node), mapping={"fqdn": f"{node}.relay.test:443"})
        if alive:
            await redis.set(KEYS.alive(node), "1", px=60_000)
    settings = CloudSettings(zone_id="Z1", relay_domain="relay.test:443", slot_count=3)
    s = RecordSweeper.for_node(settings, redis, KEYS, fqdn="s00.relay.test:443", heartbeat_ttl_s=5)
    await redis.set("rs:slot:s02", "starting-node", px=60_000)  # leased before its UPSERT, not registered yet
    assert await s.live_hosts() == {"a.relay.test", "s02.relay.test", "s00.relay.test"}
    assert s.domain == "relay.test" and s.grace_s == settings.record_sweep_grace_s(5)
