"""The sweep of stale DNS records that every relay with Route 53 names runs: a node that died
without withdrawing its records (SIGKILL, a crashed task, a lost host) leaves ``{node}`` and
``*.{node}`` pointing at an address it released -- dangling names under the customer's domain that
someone else may get the address of. Some live relay deletes them after a grace period.

Each relay ticks every ``--record-sweep-interval`` (jittered); a tick sweeps only when no relay
swept in the last half interval (``sweep:recent``) and it holds the fleet's lock (``sweep:lock``:
``SET NX PX`` with a random token, refreshed while held, released by compare-and-delete), so the
fleet sweeps one at a time, about once per interval, whatever its size. The grace clock is in
Redis (``sweep:absent``, read against Redis ``TIME``), so whichever relay sweeps next continues it.
The decision is :mod:`.staleness`; this module does the I/O. A failing sweep is counted, logged
without flooding, and tried again at the next tick: it never stops the relay.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from polysocket_core.control import Keys

from ...metrics import Count
from .leases import LockTimeout, RedisLock, as_text
from .route53 import delete_record_sets, list_record_sets, route53_client
from .settings import CloudSettings
from .slots import SlotKeys, slot_host, slot_names
from .staleness import Absence, check_sweep_domain, decide, node_host, normalize_name
from .sweep import live_fqdns

log = logging.getLogger("polysocket.relay.aws")

# The lock outlives any one sweep (it is refreshed every third of this while held) and frees
# itself this long after a holder died mid-sweep.
LOCK_TTL_S = 30.0
# A name's absence continues across sweeps at most this many intervals apart; a longer gap (no
# sweep ran: Redis or Route 53 down) restarts its grace, as nobody watched the node meanwhile.
MAX_GAP_INTERVALS = 3
FAILURE_LOG_EVERY = 10  # while a sweep keeps failing, one log line per this many failures


class LockLost(RuntimeError):
    """The lock expired during the sweep (a stall longer than its TTL): another relay may sweep now."""


class FailureLog:
    """Logs a failing periodic job without flooding: the first failure of a streak, then every
    ``every``-th with the count, then the recovery. Messages are clipped to one short line."""

    def __init__(self, what: str, every: int = FAILURE_LOG_EVERY) -> None:
        self.what = what
        self.every = every
        self.streak = 0

    def failed(self, exc: BaseException) -> None:
        self.streak += 1
        if self.streak == 1 or self.streak % self.every == 0:
            text = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            log.warning("%s failed (%d in a row; retried every tick): %s", self.what, self.streak, text)

    def succeeded(self) -> None:
        if self.streak:
            log.info("%s works again after %d failures", self.what, self.streak)
        self.streak = 0


class RecordSweeper:
    """One relay's share of the fleet's sweep. ``own_fqdn`` is this node's name (always live: a
    relay never sweeps its own records); its parent domain is where node names live.
    ``leased_hosts`` maps slot lease keys to slot names: in slot mode a node holds its lease from
    before its UPSERT, so a leased slot's name is live even before its node registers."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, zone_id: str, own_fqdn: str, interval_s: float,
                 grace_s: float, leased_hosts: Mapping[str, str] | None = None, route53: Any = None,
                 sweeps: Count | None = None, removed: Count | None = None, failures: Count | None = None,
                 jitter: Callable[[], float] = random.random) -> None:
        self.redis = redis
        self.keys = keys
        self.zone_id = zone_id
        self.own_host = node_host(own_fqdn)
        self.domain = self.own_host.partition(".")[2]
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.leased_hosts = dict(leased_hosts or {})
        self._route53 = route53
        self.sweeps = sweeps or Count()
        self.removed = removed or Count()
        self.failures = failures or Count()
        self.jitter = jitter
        self.lock = RedisLock(redis, keys.sweep_lock, ttl_s=LOCK_TTL_S)
        self.failure_log = FailureLog("record sweep")
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_node(cls, settings: CloudSettings, redis: aioredis.Redis, keys: Keys, *, fqdn: str,
                 heartbeat_ttl_s: float, sweeps: Count | None = None, removed: Count | None = None,
                 failures: Count | None = None) -> RecordSweeper:
        """The sweeper of a relay with these settings (its zone, interval, derived grace, slots)."""
        leased: dict[str, str] = {}
        if settings.slots_enabled:
            slot_keys = SlotKeys(keys.prefix)
            leased = {slot_keys.lease(s): slot_host(s, settings.relay_domain) for s in slot_names(settings.slot_count)}
        return cls(redis, keys, zone_id=settings.zone_id, own_fqdn=fqdn, interval_s=settings.record_sweep_interval_s,
                   grace_s=settings.record_sweep_grace_s(heartbeat_ttl_s), leased_hosts=leased, sweeps=sweeps,
                   removed=removed, failures=failures)

    def _client(self) -> Any:
        if self._route53 is None:
            self._route53 = route53_client()
        return self._route53

    async def tick(self) -> list[str] | None:
        """One attempt: None when another relay swept lately or is sweeping, else the names deleted."""
        if await self.redis.exists(self.keys.sweep_recent):
            return None
        try:
            async with self.lock.held(wait_s=0):
                if await self.redis.exists(self.keys.sweep_recent):  # swept while we took the lock
                    return None
                return await self._sweep()
        except LockTimeout:
            return None

    async def live_hosts(self) -> set[str]:
        """Names that are not swept: alive nodes', leased slots' (in slot mode) and this node's."""
        live = {node_host(f) for f in await live_fqdns(self.redis, self.keys)}
        if self.leased_hosts:
            keys = list(self.leased_hosts)
            holders = await self.redis.mget(keys)
            live |= {self.leased_hosts[k] for k, holder in zip(keys, holders, strict=True) if holder is not None}
        return {*live, self.own_host}

    def _list(self) -> tuple[str, list[dict[str, Any]]]:
        """(the zone's apex, its A record sets)."""
        apex, records = "", []
        for rrset in list_record_sets(self._client(), self.zone_id):
            if rrset["Type"] == "SOA":
                apex = rrset["Name"]
            elif rrset["Type"] == "A":
                records.append(rrset)
        return apex, records

    async def _sweep(self) -> list[str]:
        seconds, micros = await self.redis.time()
        now = float(seconds) + float(micros) / 1e6  # one clock for the whole fleet
        live = await self.live_hosts()
        ledger = {as_text(k): a for k, v in (await self.redis.hgetall(self.keys.sweep_absent)).items()
                  if (a := Absence.decode(as_text(v))) is not None}
        apex, records = await asyncio.to_thread(self._list)
        check_sweep_domain(self.domain, apex)
        decision = decide((r["Name"] for r in records), self.domain, live, ledger, now, grace_s=self.grace_s,
                          max_gap_s=MAX_GAP_INTERVALS * self.interval_s)
        due = [r for r in records if normalize_name(r["Name"]) in decision.due]
        if due:
            if not await self.lock.refresh():  # a long stall: the lock and the decision are stale
                raise LockLost(f"{self.keys.sweep_lock} expired during the sweep; nothing deleted")
            await asyncio.to_thread(delete_record_sets, self._client(), self.zone_id, due)
        absences = {n: a for n, a in decision.absences.items() if n not in decision.due}
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(self.keys.sweep_absent)
            if absences:
                p.hset(self.keys.sweep_absent, mapping={n: a.encode() for n, a in absences.items()})
            p.set(self.keys.sweep_recent, "1", px=max(1, int(self.interval_s * 500)))  # half an interval
            await p.execute()
        names = sorted(normalize_name(r["Name"]) for r in due)
        self.sweeps.inc()
        self.removed.inc(len(names))
        if names:
            log.info("record sweep: deleted %s (their nodes were gone for %g s or more)", ", ".join(names),
                     self.grace_s)
        return names

    async def run(self) -> None:
        while True:
            # Ticks every half to whole interval, at random, so a fleet started together spreads
            # out; a lone relay still sweeps at least once per interval.
            await asyncio.sleep(self.interval_s * (0.5 + 0.5 * self.jitter()))
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis, Route 53, throttling, a refused domain: next tick
                self.failures.inc()
                self.failure_log.failed(exc)
            else:
                self.failure_log.succeeded()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="record-sweeper")
            log.info("record sweep of %s every %g s, grace %g s", self.domain, self.interval_s, self.grace_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
