"""The node's stats report for ``polysocket status`` (``polysocket_core.fleet``): every
``STATS_INTERVAL_S``, one pipelined HSET + EXPIRE of ``polysocket_core.fleet.stats_key``.

Apart from the heartbeat on purpose: the heartbeat is the pick's input and runs every second; what
``status`` needs beyond it (the heartbeat TTL, the slot, the sockets-opened counter) changes slowly
or is only read by people, so it costs Redis one small write per node per 10 s instead of a wider
heartbeat. A Redis error is logged and the next report tries again: the fleet view must never
touch the data path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from polysocket_core.control import Keys
from polysocket_core.fleet import STATS_INTERVAL_S, STATS_TTL_S, NodeStats, stats_key

log = logging.getLogger("polysocket.relay")


class FleetStats:
    """Publishes ``opened()`` (sockets opened so far) with the node's heartbeat TTL and ``slot()``."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, node_id: str, *, heartbeat_ttl_s: float,
                 opened: Callable[[], int], slot: Callable[[], str], interval_s: float = STATS_INTERVAL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.key = stats_key(keys, node_id)
        self.heartbeat_ttl_ms = int(heartbeat_ttl_s * 1000)
        self.opened = opened
        self.slot = slot
        self.interval_s = interval_s
        self.clock = clock
        self.last: NodeStats | None = None  # the last report written
        self._task: asyncio.Task[None] | None = None

    def report(self) -> NodeStats:
        """The next report: now's counter, with the last written one's as its previous sample."""
        opened, at_ms = self.opened(), int(self.clock() * 1000)
        if self.last is None:
            return NodeStats(self.heartbeat_ttl_ms, self.slot(), opened, at_ms)
        return self.last.next(opened, at_ms)

    async def publish_once(self) -> None:
        stats = self.report()
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(self.key)  # a first report must not inherit an earlier life's previous sample
            fields: dict[FieldT, EncodableT] = {k: v for k, v in stats.fields().items()}
            p.hset(self.key, mapping=fields)
            p.expire(self.key, int(STATS_TTL_S))
            await p.execute()
        self.last = stats

    async def run(self) -> None:
        while self._task is not None:  # not ``while True``: redis-py can swallow a cancellation
            try:
                await self.publish_once()
            except RedisError as exc:
                log.warning("fleet stats report failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="fleet-stats")

    async def stop(self) -> None:
        """Stop reporting and drop the report (the node is leaving)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=self.interval_s)
        with contextlib.suppress(RedisError):
            await self.redis.delete(self.key)
