"""The fleet as ``polysocket status`` shows it: one row per node, computed from raw control-plane
records and a ``now`` passed in (pure: no Redis, no clock of its own).

Each row comes from three records of the node, read in one pipeline (``polysocket_cli.status``):

- its hash (``Keys.node``): ``fqdn``, ``capacity``, ``sockets``, ``draining``, ``started_at``,
  written by its registration and every heartbeat;
- the PTTL of its ``alive`` key: the heartbeat sets it to the node's heartbeat TTL, so the age of
  the last heartbeat is that TTL minus what is left of it -- measured by Redis alone, no clock
  skew between the node and whoever runs ``status``;
- its stats hash (:func:`stats_key`, :class:`NodeStats`), which the relay writes every
  :data:`STATS_INTERVAL_S` (``relay_node.control.fleetstats``), apart from the heartbeat so that
  the heartbeat -- and the pick that reads the same hash -- stay as they are: the heartbeat TTL
  (for the age above), the slot it leased, and its sockets-opened counter now and at the previous
  report, whose difference over the time between the two is the node's recent connect rate.

Every field is untrusted text: a missing or malformed one becomes ``None`` (shown as ``-``), never
an exception, so one odd record cannot hide the rest of the fleet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .control import Keys

# A stats report every 10 s: 1,000 nodes cost Redis 100 small pipelined writes a second (the
# heartbeats alone are 1,000), and the connect rate is the one over the last 10 s.
STATS_INTERVAL_S = 10.0
# A dead node's stats outlive it by at most this long (three missed reports).
STATS_TTL_S = 3 * STATS_INTERVAL_S


def stats_key(keys: Keys, node_id: str) -> str:
    """``{node key}:stats``: beside the node's hash (and in its cluster slot, whatever the schema)."""
    return keys.node(node_id) + ":stats"


def _int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class NodeStats:
    """One stats report of a node: what the heartbeat does not carry."""

    heartbeat_ttl_ms: int
    slot: str  # the DNS slot it leased ("" when it runs without slots)
    opened: int  # sockets opened since the node started (its polysocket_sockets_opened counter)
    at_ms: int  # the node's wall clock at this report
    prev_opened: int | None = None  # the same at the previous report (None: this is the first)
    prev_at_ms: int | None = None

    def fields(self) -> dict[str, str]:
        out = {"heartbeat_ttl_ms": str(self.heartbeat_ttl_ms), "slot": self.slot, "opened": str(self.opened),
               "at_ms": str(self.at_ms)}
        if self.prev_opened is not None and self.prev_at_ms is not None:
            out.update(prev_opened=str(self.prev_opened), prev_at_ms=str(self.prev_at_ms))
        return out

    def next(self, opened: int, at_ms: int) -> NodeStats:
        """The report after this one: this one's counter becomes the previous sample."""
        return NodeStats(self.heartbeat_ttl_ms, self.slot, opened, at_ms, self.opened, self.at_ms)

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> NodeStats | None:
        """The report in a stats hash, or None when it is missing or malformed."""
        ttl, opened, at = _int(raw.get("heartbeat_ttl_ms")), _int(raw.get("opened")), _int(raw.get("at_ms"))
        if ttl is None or opened is None or at is None:
            return None
        return cls(ttl, raw.get("slot", ""), opened, at, _int(raw.get("prev_opened")), _int(raw.get("prev_at_ms")))

    def connect_rate(self) -> float | None:
        """Sockets opened per second between the previous report and this one (None: no previous
        report, or a counter that went backwards, i.e. the node restarted)."""
        if self.prev_opened is None or self.prev_at_ms is None or self.at_ms <= self.prev_at_ms:
            return None
        opened = self.opened - self.prev_opened
        if opened < 0:
            return None
        return opened * 1000.0 / (self.at_ms - self.prev_at_ms)


@dataclass(frozen=True, slots=True)
class RawNode:
    """What Redis holds about one node id listed in ``Keys.nodes``."""

    id: str
    record: Mapping[str, str]  # its hash (empty once it expired)
    alive_pttl_ms: int  # PTTL of its alive key: -2 gone (dead), -1 no TTL
    stats: Mapping[str, str]  # its stats hash (empty: none yet, or an older relay)


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node in ``polysocket status``. ``None``: not known (see the module docstring)."""

    id: str
    fqdn: str
    slot: str
    alive: bool
    draining: bool
    sockets: int | None
    capacity: int | None
    utilization: float | None  # sockets / capacity, 0..1 (above 1 only while a pick races a beat)
    started_at: int | None  # unix seconds, the node's clock
    age_s: float | None
    heartbeat_age_s: float | None
    connects_per_s: float | None

    @property
    def state(self) -> str:
        if not self.alive:
            return "dead"
        return "draining" if self.draining else "live"


def node_row(raw: RawNode, now_s: float) -> NodeRow:
    rec = raw.record
    stats = NodeStats.parse(raw.stats)
    sockets, capacity, started = _int(rec.get("sockets")), _int(rec.get("capacity")), _int(rec.get("started_at"))
    alive = raw.alive_pttl_ms != -2 and bool(rec)
    heartbeat_age: float | None = None
    if alive and stats is not None and raw.alive_pttl_ms >= 0:
        heartbeat_age = max(0.0, (stats.heartbeat_ttl_ms - raw.alive_pttl_ms) / 1000.0)
    return NodeRow(
        id=raw.id,
        fqdn=rec.get("fqdn", ""),
        slot=stats.slot if stats is not None else "",
        alive=alive,
        draining=rec.get("draining") == "1",
        sockets=sockets,
        capacity=capacity,
        utilization=sockets / capacity if sockets is not None and capacity else None,
        started_at=started,
        age_s=max(0.0, now_s - started) if started is not None else None,
        heartbeat_age_s=heartbeat_age,
        connects_per_s=stats.connect_rate() if stats is not None and alive else None,
    )


def fleet_rows(raws: Iterable[RawNode], now_s: float) -> list[NodeRow]:
    """The rows of every listed node, live ones first, then by id."""
    return sorted((node_row(r, now_s) for r in raws), key=lambda row: (not row.alive, row.id))


@dataclass(frozen=True, slots=True)
class FleetTotals:
    """The live nodes together (draining ones included: they still hold sockets)."""

    live: int
    draining: int
    dead: int
    sockets: int
    capacity: int
    connects_per_s: float

    @property
    def utilization(self) -> float | None:
        return self.sockets / self.capacity if self.capacity else None


def fleet_totals(rows: Iterable[NodeRow]) -> FleetTotals:
    live = draining = dead = sockets = capacity = 0
    rate = 0.0
    for row in rows:
        if not row.alive:
            dead += 1
            continue
        live += 1
        draining += row.draining
        sockets += row.sockets or 0
        capacity += row.capacity or 0
        rate += row.connects_per_s or 0.0
    return FleetTotals(live, draining, dead, sockets, capacity, rate)
