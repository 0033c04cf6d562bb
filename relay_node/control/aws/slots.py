"""Slots and their certificates: the decisions, without I/O.

A fleet's node names come from a fixed pool of **slots** ``s00 … sNN`` under the relay domain
(``s03.relay.example.com``), leased in Redis while a node lives (``relay_node.control.aws.leases``). Each
slot has one certificate for ``{slot}.{domain}`` and ``*.{slot}.{domain}``, obtained once by ACME
and reused by every node that later holds the slot (``relay_node.control.aws.certs``). This module decides:
which slot a node takes, what its Redis keys are, and whether a stored certificate can be served,
should be renewed, or must be ordered before the node serves.

Pure: no Redis, no boto3, no clock of its own (``now`` is passed in).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_SLOTS = 1000
SLOT_RE = re.compile(r"s[0-9]{2,3}")
_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def slot_names(count: int) -> list[str]:
    """``s00`` … ``s{count-1}``, zero-padded to at least two digits (``s000`` … when count > 100)."""
    if not 1 <= count <= MAX_SLOTS:
        raise ValueError(f"slot count must be 1-{MAX_SLOTS}")
    width = max(2, len(str(count - 1)))
    return [f"s{i:0{width}d}" for i in range(count)]


def parse_relay_domain(raw: str) -> tuple[str, int | None]:
    """``relay.example.com`` or ``relay.example.com:8443`` -> (lower-case host, public port or None).

    The port is the one clients use (part of the node's fqdn); it is never part of a certificate or
    a DNS name.
    """
    host, port = raw.strip(), None
    if host.count(":") == 1:
        host, _, port_text = host.partition(":")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"bad port in relay domain {raw!r}")
        port = int(port_text)
    host = host.rstrip(".").lower()
    labels = host.split(".")
    if len(labels) < 2 or len(host) > 240 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError(f"not a DNS name with at least two labels: {raw!r}")
    return host, port


def slot_host(slot: str, relay_domain: str) -> str:
    """The slot's DNS name, ``s03.relay.example.com`` (no port)."""
    return f"{slot}.{parse_relay_domain(relay_domain)[0]}"


def slot_fqdn(slot: str, relay_domain: str) -> str:
    """The node's ``--fqdn`` while it holds ``slot``: its DNS name plus the public port, if any."""
    host, port = parse_relay_domain(relay_domain)
    return f"{slot}.{host}" + (f":{port}" if port is not None else "")


def cert_names(slot: str, relay_domain: str) -> tuple[str, str]:
    """The two names on the slot's certificate: the node name and its per-socket wildcard."""
    host = slot_host(slot, relay_domain)
    return host, f"*.{host}"


@dataclass(frozen=True, slots=True)
class SlotKeys:
    """Redis keys of the slot pool, under the control plane's key prefix.

    * ``{prefix}slot:{slot}`` -- the lease: the holder's node id, with a TTL the holder refreshes.
    * ``{prefix}slot:{slot}:certlock`` -- held (random token, TTL refreshed) while a certificate of
      the slot is being ordered, so two nodes never order for one slot at once.
    * ``{prefix}acme:accountlock`` -- held while the ACME account is created (once per directory).
    """

    prefix: str

    def lease(self, slot: str) -> str:
        return f"{self.prefix}slot:{slot}"

    def cert_lock(self, slot: str) -> str:
        return f"{self.prefix}slot:{slot}:certlock"

    @property
    def account_lock(self) -> str:
        return f"{self.prefix}acme:accountlock"


def choose_slot(names: Sequence[str], holders: Mapping[str, str | None], owner: str) -> str | None:
    """The slot ``owner`` should try to take, given who holds each slot now (None: free).

    A slot already held under ``owner``'s own node id comes first (the node restarted before its
    lease expired: it gets its name back, and needs no new certificate). Otherwise the lowest free
    slot: a fleet that always fills from the bottom keeps using the same few slots, whose
    certificates already exist, so scaling out and in orders nothing new. None when all are held.
    """
    for name in names:
        if holders.get(name) == owner:
            return name
    for name in names:
        if holders.get(name) is None:
            return name
    return None


class CertAction(enum.Enum):
    USE = "use"  # valid, for the right names, not due for renewal
    RENEW = "renew"  # valid but within renew-before of its end: serve it, and order a new one
    ORDER = "order"  # missing, for other names, expired or not yet valid: nothing to serve


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What the decision needs to know about a stored certificate."""

    names: frozenset[str]
    not_before: dt.datetime
    not_after: dt.datetime


def cert_action(facts: CertFacts | None, wanted: Sequence[str], now: dt.datetime,
                renew_before: dt.timedelta) -> CertAction:
    """USE, RENEW or ORDER a slot's stored certificate (``facts``, None when there is none).

    A certificate counts for the slot only when its names are exactly ``wanted`` (a store shared by
    two relay domains, or a slot count that changed, must not serve a wrong name). One that expires
    within ``renew_before`` is still served while its successor is ordered, so an ACME outage at
    that moment costs nothing; an expired one is not served at all.
    """
    if facts is None or facts.names != frozenset(wanted):
        return CertAction.ORDER
    if not facts.not_before <= now < facts.not_after:
        return CertAction.ORDER
    if facts.not_after - now <= renew_before:
        return CertAction.RENEW
    return CertAction.USE


RETRY_AFTER = dt.timedelta(hours=1)


def next_check(facts: CertFacts, now: dt.datetime, renew_before: dt.timedelta,
               interval: dt.timedelta, retry: dt.timedelta = RETRY_AFTER) -> dt.timedelta:
    """How long a serving node waits before it looks at its certificate again: the regular interval,
    or less when the certificate becomes due for renewal sooner (never below one minute). A
    certificate that is already due (its renewal failed, or another node is renewing it) is looked
    at again after ``retry`` at the most: often enough to pick up the successor soon, rarely enough
    to stay far from the CA's limits on failed validations (Let's Encrypt: 5 per hour and name)."""
    due_in = facts.not_after - renew_before - now
    if due_in <= dt.timedelta(0):
        return min(interval, retry)
    return max(dt.timedelta(minutes=1), min(interval, due_in))


def is_slot(name: str) -> bool:
    return SLOT_RE.fullmatch(name) is not None
