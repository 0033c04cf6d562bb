"""The slot lease and the per-slot certificate lock, in Redis (the decisions are in ``slots``).

Both are plain keys with a TTL that their holder refreshes: ``SET key value NX PX ttl`` takes one,
a Lua compare-and-refresh keeps it, a Lua compare-and-delete gives it back. Whoever stops refreshing
(a node that died, froze, or lost Redis for longer than the TTL) loses it when the TTL runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .slots import SlotKeys, choose_slot

log = logging.getLogger("polysocket.relay.aws")

# KEYS[1] lease key; ARGV[1] owner, ARGV[2] ttl ms. Take it when free, or keep it when it is ours.
_TAKE = """
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# Refresh / delete only while the key still holds our value.
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class NoFreeSlot(RuntimeError):
    """Every slot is leased: the fleet is larger than --slot-count."""


class LockTimeout(TimeoutError):
    """The lock stayed taken for the whole wait."""


def as_text(value: bytes | str) -> str:
    """A Redis reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _text(value: Any) -> str | None:
    return None if value is None else as_text(value)


async def _eval(redis: aioredis.Redis, script: str, key: str, *args: str | int) -> int:
    result = await redis.eval(script, 1, key, *args)
    return int(result)


class SlotLease:
    """One node's lease on one slot of the pool.

    ``acquire()`` takes a slot (:func:`choose_slot` on the current holders, then an atomic take; a
    lost race re-reads and tries again), ``start()`` refreshes it every third of its TTL, ``release()``
    deletes it if it is still ours. When a refresh finds the lease gone or taken by another node (this
    node was cut off from Redis for longer than the TTL), ``on_lost`` is called once: the node's name
    now belongs to someone else, so it must stop serving under it.
    """

    def __init__(self, redis: aioredis.Redis, keys: SlotKeys, names: Sequence[str], owner: str, ttl_s: float,
                 *, on_lost: Callable[[], None] | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError("lease TTL must be > 0")
        self.redis = redis
        self.keys = keys
        self.names = list(names)
        self.owner = owner
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.on_lost = on_lost
        self.slot: str | None = None
        self.lost = False
        self._task: asyncio.Task[None] | None = None

    async def holders(self) -> dict[str, str | None]:
        values = await self.redis.mget([self.keys.lease(n) for n in self.names])
        return {n: _text(v) for n, v in zip(self.names, values, strict=True)}

    async def acquire(self) -> str:
        """Take a slot; :class:`NoFreeSlot` when all are held."""
        for _ in range(len(self.names) + 1):
            slot = choose_slot(self.names, await self.holders(), self.owner)
            if slot is None:
                break
            if await _eval(self.redis, _TAKE, self.keys.lease(slot), self.owner, self.ttl_ms):
                self.slot, self.lost = slot, False
                log.info("slot %s leased by %s (ttl %d ms)", slot, self.owner, self.ttl_ms)
                return slot
            # another node took it between the read and the take: read again
        raise NoFreeSlot(f"all {len(self.names)} slots are leased (the fleet must not grow beyond --slot-count)")

    async def refresh(self) -> bool:
        """Extend the lease; False (and ``lost``) when it is no longer ours."""
        if self.slot is None:
            return False
        if await _eval(self.redis, _REFRESH, self.keys.lease(self.slot), self.owner, self.ttl_ms):
            return True
        if not self.lost:
            self.lost = True
            log.error("slot %s: lease lost (expired or taken over); this node no longer owns its name", self.slot)
            if self.on_lost is not None:
                self.on_lost()
        return False

    async def _keep(self) -> None:
        interval = self.ttl_ms / 3000
        while not self.lost:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except RedisError as e:  # retried at the next tick; the TTL leaves two more tries
                log.warning("slot %s: lease refresh failed: %s", self.slot, e)

    def start(self) -> None:
        if self._task is None and self.slot is not None:
            self._task = asyncio.get_running_loop().create_task(self._keep(), name=f"slot-lease-{self.slot}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def release(self) -> bool:
        """Stop refreshing and give the slot back (only if still ours); True if it was deleted."""
        await self.stop()
        slot, self.slot = self.slot, None
        if slot is None or self.lost:
            return False
        released = bool(await _eval(self.redis, _RELEASE, self.keys.lease(slot), self.owner))
        log.info("slot %s released by %s", slot, self.owner)
        return released


class RedisLock:
    """A mutual-exclusion lock on one key, with a random token per holder and a TTL refreshed while
    it is held, so a holder that dies frees it within ``ttl_s`` and a slow holder keeps it."""

    def __init__(self, redis: aioredis.Redis, key: str, *, ttl_s: float = 30.0, poll_s: float = 0.5) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.poll_s = poll_s
        self.token = secrets.token_hex(16)
        self.waited = False  # the last acquire found the lock taken at least once

    async def try_acquire(self) -> bool:
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def acquire(self, wait_s: float) -> None:
        """Take the lock, waiting up to ``wait_s``; :class:`LockTimeout` after that."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        self.waited = False
        while not await self.try_acquire():
            self.waited = True
            if loop.time() + self.poll_s > deadline:
                raise LockTimeout(f"{self.key} still held after {wait_s:g} s")
            await asyncio.sleep(self.poll_s)

    async def refresh(self) -> bool:
        return bool(await _eval(self.redis, _REFRESH, self.key, self.token, self.ttl_ms))

    async def release(self) -> bool:
        return bool(await _eval(self.redis, _RELEASE, self.key, self.token))

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                if not await self.refresh():
                    log.error("lock %s lost while held", self.key)
                    return
            except RedisError as e:
                log.warning("lock %s: refresh failed: %s", self.key, e)

    @contextlib.asynccontextmanager
    async def held(self, wait_s: float) -> AsyncIterator[RedisLock]:
        """``async with lock.held(wait_s):`` -- acquired, refreshed in the background, released."""
        await self.acquire(wait_s)
        keeper = asyncio.get_running_loop().create_task(self._keep(), name=f"lock-{self.key}")
        try:
            yield self
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            with contextlib.suppress(RedisError):
                await self.release()
