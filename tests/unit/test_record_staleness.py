"""The sweep's decision (relay_node/control/aws/staleness.py) and its grace (settings): which records
of which nodes go, and when, with the clock passed in. No Redis, no Route 53."""

from __future__ import annotations

import pytest

from polysocket_core.settings import SettingError
from relay_node.control.aws.settings import CloudSettings
from relay_node.control.aws.staleness import (
    Absence,
    UnsafeSweepDomain,
    check_sweep_domain,
    decide,
    node_of_record,
)
from relay_node.control.aws.sweeper import FailureLog
from relay_node.settings import RelayConfig

DOMAIN = "relay.example.com"
RECORDS = [
    "n1.relay.example.com.", "\\052.n1.relay.example.com.",  # live
    "n2.relay.example.com.", "\\052.n2.relay.example.com.",  # dead
    "relay.example.com.", "www.example.com.", "a.b.relay.example.com.", "\\052.relay.example.com.",  # never
]
DEAD = {"n2.relay.example.com", "*.n2.relay.example.com"}


def sweep(absences: dict[str, Absence], now: float, live: tuple[str, ...] = ("N1.relay.example.com:443",),
          grace: float = 60, gap: float = 30) -> tuple[set[str], dict[str, Absence]]:
    d = decide(RECORDS, DOMAIN, live, absences, now, grace_s=grace, max_gap_s=gap)
    return set(d.due), d.absences


def test_only_node_shaped_names_under_the_domain_are_ever_candidates() -> None:
    assert node_of_record("\\052.N2.Relay.Example.Com.", DOMAIN) == "n2.relay.example.com"
    for name in ("relay.example.com", "www.example.com", "a.b.relay.example.com", "*.relay.example.com",
                 "n2.relay.example.com.evil.test"):
        assert node_of_record(name, DOMAIN) is None, name
    due, ledger = sweep({}, 0.0, live=())  # nothing live: still only the two nodes' records
    assert set(ledger) == DEAD | {"n1.relay.example.com", "*.n1.relay.example.com"} and due == set()


def test_a_dead_nodes_records_are_due_once_missing_at_every_sweep_for_the_grace() -> None:
    due, ledger = sweep({}, 1000.0)
    assert due == set() and set(ledger) == DEAD  # first sight starts the clock; the live n1 is no candidate
    for now in (1020.0, 1040.0, 1059.9):
        due, ledger = sweep(ledger, now)
        assert due == set(), now
    due, ledger = sweep(ledger, 1060.0)
    assert due == DEAD
    assert set(ledger) == DEAD  # kept until the records are gone from the listing (a delete may fail)


def test_a_node_that_comes_back_or_a_gap_in_the_sweeps_restarts_the_clock() -> None:
    _, ledger = sweep({}, 1000.0)
    _, ledger = sweep(ledger, 1020.0, live=("n1.relay.example.com", "n2.relay.example.com"))
    assert ledger == {}  # n2 registered (it was starting): forgotten
    _, ledger = sweep(ledger, 1040.0)
    due, ledger = sweep(ledger, 1090.0)  # a 50 s gap > max_gap 30: nobody watched n2 meanwhile
    assert due == set() and ledger["n2.relay.example.com"] == Absence(1090.0, 1090.0)
    due, ledger = sweep(ledger, 1000.0)  # the clock went back: in doubt, keep the records longer
    assert due == set() and ledger["n2.relay.example.com"].first_s == 1000.0


def test_the_ledger_round_trips_and_garbage_restarts_a_clock() -> None:
    a = Absence(12.5, 99.25)
    assert Absence.decode(a.encode()) == a
    for raw in ("", "12", "x:y", "5:4", "1:2:3"):
        assert Absence.decode(raw) is None, raw


def test_no_sweep_right_under_the_zone_apex() -> None:
    check_sweep_domain("relay.example.com", "example.com.")
    for domain, apex in (("example.com", "example.com."), ("relay.other.test", "example.com")):
        with pytest.raises(UnsafeSweepDomain):
            check_sweep_domain(domain, apex)


def test_the_grace_outlasts_the_heartbeat_ttl_the_slot_lease_and_a_start() -> None:
    s = CloudSettings(zone_id="Z1", relay_domain=DOMAIN, slot_lease_ttl_s=45, insync_timeout_s=20,
                      record_sweep_interval_s=10)
    assert s.record_sweep_grace_s(heartbeat_ttl_s=5) == 45 + 10  # the lease is the longest
    assert s.record_sweep_grace_s(heartbeat_ttl_s=50) == 50 + 10
    d = CloudSettings(zone_id="Z1")  # the defaults, task-id names: a start may wait 300 s for INSYNC
    hb = RelayConfig().heartbeat_ttl_s
    assert d.record_sweep_grace_s(hb) > max(hb, d.slot_lease_ttl_s, d.insync_timeout_s)
    # docs/deploy.md states this bound for the defaults: 5 + 360 + 120 s
    assert d.record_sweep_bound_s(hb) == 485


def test_the_interval_has_a_floor() -> None:
    with pytest.raises(SettingError, match="--record-sweep-interval"):
        CloudSettings(record_sweep_interval_s=0.5)


def test_a_failing_sweep_is_logged_once_per_streak_and_every_tenth(caplog: pytest.LogCaptureFixture) -> None:
    failures = FailureLog("record sweep", every=10)
    with caplog.at_level("INFO", logger="polysocket.relay.aws"):
        for _ in range(25):
            failures.failed(RuntimeError("route53 throttled\n" + "x" * 1000))
        failures.succeeded()
        failures.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # failures 1, 10, 20, then the recovery once
    assert all(len(line) < 400 and "\n" not in line for line in lines)
    assert "works again after 25 failures" in lines[-1]
