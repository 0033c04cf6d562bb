"""Which relay records are stale: the sweeper's decision, without I/O.

A record of a node name (``{label}.{domain}`` or ``*.{label}.{domain}``) whose node is not live is a
*candidate*. It is deleted only once it has been a candidate at every sweep for ``grace_s``: a node
between its UPSERT and its Redis registration, or one that missed heartbeats for a moment, is not
live either, and must keep its records. Route 53 keeps no record ages, so the sweeper keeps its
own: for each candidate, when it was first and last seen missing (an :class:`Absence`), shared by
the fleet in Redis so whichever relay sweeps next continues the same clock.

Pure: the clock (``now_s``, the same clock for every sweeper: Redis ``TIME``) is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def normalize_name(name: str) -> str:
    """Route 53 answers names lower-case, with a final dot and ``*`` escaped as ``\\052``."""
    return name.replace("\\052", "*").rstrip(".").lower()


def node_host(fqdn: str) -> str:
    """A node's DNS name from its fqdn as registered (``s03.relay.example.com:443`` -> without the port)."""
    return normalize_name(fqdn.rsplit(":", 1)[0] if fqdn.count(":") == 1 else fqdn)


def node_of_record(record_name: str, domain: str) -> str | None:
    """The node name a record belongs to, or None when the record is not of a node's shape under
    ``domain`` (the domain's own records, deeper names): only those are ever swept."""
    name = normalize_name(record_name)
    node = name[2:] if name.startswith("*.") else name
    label, _, rest = node.partition(".")
    if rest != normalize_name(domain) or not label or label == "*":
        return None
    return node


class UnsafeSweepDomain(ValueError):
    """The names the sweep would consider are not a domain of their own below the zone's apex."""


def check_sweep_domain(domain: str, apex: str) -> None:
    """Refuse to sweep directly under the zone's apex (or outside the zone): there, every
    ``{label}.{apex}`` -- ``www``, ``mail`` -- would look like a node's name. Relays are named under
    a relay domain of their own (``{node}.relay.example.com``)."""
    d, a = normalize_name(domain), normalize_name(apex)
    if not d.endswith("." + a):
        raise UnsafeSweepDomain(f"node names under {d!r} are not below the zone apex {a!r}: not sweeping; "
                                "name relays under a domain of their own (relay.{a})")


@dataclass(frozen=True, slots=True)
class Absence:
    """A candidate's record age: first and last sweep that saw its node missing (seconds)."""

    first_s: float
    last_s: float

    def encode(self) -> str:
        return f"{self.first_s:.3f}:{self.last_s:.3f}"

    @classmethod
    def decode(cls, raw: str) -> Absence | None:
        """None for anything malformed (the ledger is ours, but Redis is shared): that name's clock restarts."""
        first, sep, last = raw.partition(":")
        try:
            absence = cls(float(first), float(last))
        except ValueError:
            return None
        return absence if sep and absence.first_s <= absence.last_s else None


@dataclass(frozen=True, slots=True)
class SweepDecision:
    due: frozenset[str]  # record names to delete now
    absences: dict[str, Absence]  # the ledger to keep: every candidate, the due ones too (a delete may fail)


def decide(record_names: Iterable[str], domain: str, live_hosts: Iterable[str], absences: Mapping[str, Absence],
           now_s: float, *, grace_s: float, max_gap_s: float) -> SweepDecision:
    """The sweep at ``now_s``: each candidate's absence continues when the previous sighting is at
    most ``max_gap_s`` old (sweeps ran all along), else it starts now; it is due once it lasted
    ``grace_s``. A clock that went back (``now_s`` before the last sighting) restarts it too: in
    doubt, keep the record longer."""
    live = {node_host(h) for h in live_hosts}
    kept: dict[str, Absence] = {}
    due: set[str] = set()
    for raw in record_names:
        name = normalize_name(raw)
        node = node_of_record(name, domain)
        if node is None or node in live:
            continue
        prior = absences.get(name)
        continuous = prior is not None and 0 <= now_s - prior.last_s <= max_gap_s
        first = prior.first_s if prior is not None and continuous else now_s
        kept[name] = Absence(first, now_s)
        if now_s - first >= grace_s:
            due.add(name)
    return SweepDecision(frozenset(due), kept)
