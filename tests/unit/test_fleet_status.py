"""The fleet view's pure part: raw control-plane records (+ now) to rows, totals, the table and the
``--json`` document; and the command line around it (flags, the --watch floor)."""

from __future__ import annotations

import json

import pytest

from polysocket_cli.main import build_parser, main
from polysocket_cli.status import JSON_VERSION, render
from polysocket_core.fleet import NodeStats, RawNode, fleet_rows, fleet_totals, node_row

NOW = 1_800_000_000.0


def record(**over: str) -> dict[str, str]:
    base = {"id": "n1", "fqdn": "s03.relay.example.com", "capacity": "100", "sockets": "25", "draining": "0",
            "started_at": str(int(NOW) - 3600)}
    return {**base, **over}


def stats(**over: str) -> dict[str, str]:
    base = NodeStats(heartbeat_ttl_ms=5000, slot="s03", opened=160, at_ms=int(NOW * 1000) - 2000,
                     prev_opened=100, prev_at_ms=int(NOW * 1000) - 12000).fields()
    return {**base, **over}


def test_a_live_node_row() -> None:
    row = node_row(RawNode("n1", record(), alive_pttl_ms=4200, stats=stats()), NOW)
    assert (row.id, row.fqdn, row.slot, row.state) == ("n1", "s03.relay.example.com", "s03", "live")
    assert (row.sockets, row.capacity, row.utilization) == (25, 100, 0.25)
    assert row.age_s == 3600 and row.started_at == int(NOW) - 3600
    assert row.heartbeat_age_s == pytest.approx(0.8)  # TTL 5 s, 4.2 s of it left
    assert row.connects_per_s == pytest.approx(6.0)  # 60 sockets in 10 s


def test_draining_and_dead() -> None:
    draining = node_row(RawNode("n1", record(draining="1"), 4000, stats()), NOW)
    assert draining.state == "draining" and draining.draining
    dead = node_row(RawNode("n2", record(), alive_pttl_ms=-2, stats=stats()), NOW)
    assert dead.state == "dead" and dead.heartbeat_age_s is None and dead.connects_per_s is None
    gone = node_row(RawNode("n3", {}, alive_pttl_ms=-2, stats={}), NOW)  # listed, records expired
    assert gone.state == "dead" and gone.sockets is None and gone.fqdn == ""


def test_without_stats_the_heartbeat_age_slot_and_rate_are_unknown() -> None:
    row = node_row(RawNode("n1", record(), 4000, {}), NOW)
    assert (row.slot, row.heartbeat_age_s, row.connects_per_s) == ("", None, None)
    assert row.utilization == 0.25  # the hash alone still gives the load


def test_the_rate_needs_two_reports_and_a_counter_that_did_not_restart() -> None:
    first = NodeStats(5000, "", opened=7, at_ms=1000)
    assert first.connect_rate() is None
    assert first.next(opened=27, at_ms=5000).connect_rate() == pytest.approx(5.0)
    assert first.next(opened=3, at_ms=5000).connect_rate() is None  # the node restarted
    assert first.next(opened=9, at_ms=1000).connect_rate() is None  # no time passed
    assert NodeStats.parse(first.next(27, 5000).fields()) == first.next(27, 5000)


@pytest.mark.parametrize("bad", [
    {"capacity": "lots"}, {"sockets": "-"}, {"started_at": "yesterday"}, {"capacity": "0"}, {"draining": "yes"},
])
def test_malformed_fields_become_unknown_not_errors(bad: dict[str, str]) -> None:
    row = node_row(RawNode("n1", record(**bad), 4000, stats(heartbeat_ttl_ms="x")), NOW)
    assert row.alive and row.heartbeat_age_s is None and row.slot == ""
    key = next(iter(bad))
    if key in ("capacity", "sockets"):
        assert row.utilization is None
    if key == "started_at":
        assert row.age_s is None
    if key == "draining":
        assert not row.draining


def test_rows_and_totals() -> None:
    raws = [RawNode("b", record(sockets="50"), 4000, stats()),
            RawNode("a", record(sockets="10", draining="1"), 4000, {}),
            RawNode("c", record(), -2, {})]
    rows = fleet_rows(raws, NOW)
    assert [r.id for r in rows] == ["a", "b", "c"]  # live ones by id, then the dead
    totals = fleet_totals(rows)
    assert (totals.live, totals.draining, totals.dead) == (2, 1, 1)
    assert (totals.sockets, totals.capacity, totals.utilization) == (60, 200, 0.3)
    assert totals.connects_per_s == pytest.approx(6.0)


def test_json_document_schema() -> None:
    raws = [RawNode("n1", record(), 4200, stats()), RawNode("n2", {}, -2, {})]
    doc = json.loads(render(raws, NOW, as_json=True, show_dead=False))
    assert doc["version"] == JSON_VERSION and doc["now"] == NOW
    assert [n["id"] for n in doc["nodes"]] == ["n1"]  # the dead one only with --all
    assert set(doc["nodes"][0]) == {"id", "fqdn", "slot", "state", "alive", "draining", "sockets", "capacity",
                                    "utilization", "started_at", "age_s", "heartbeat_age_s", "connects_per_s"}
    assert set(doc["totals"]) == {"live", "draining", "dead", "sockets", "capacity", "utilization",
                                  "connects_per_s"}
    assert doc["totals"]["dead"] == 1
    everything = json.loads(render(raws, NOW, as_json=True, show_dead=True))
    assert [n["state"] for n in everything["nodes"]] == ["live", "dead"]
    assert everything["nodes"][1]["sockets"] is None


def test_table() -> None:
    raws = [RawNode("n1", record(), 4200, stats()), RawNode("node-two", record(draining="1", sockets="3"), 4000, {})]
    lines = render(raws, NOW, as_json=False, show_dead=False).splitlines()
    assert lines[0].split() == ["NODE", "STATE", "SLOT", "SOCKETS", "CAPACITY", "UTIL", "CONN/S", "AGE", "BEAT",
                                "FQDN"]
    assert lines[1].split() == ["n1", "live", "s03", "25", "100", "25%", "6.0", "1h00m", "0.8s",
                                "s03.relay.example.com"]
    assert lines[2].split()[:7] == ["node-two", "draining", "-", "3", "100", "3%", "-"]
    assert lines[-1] == "2 live (1 draining), 0 dead; 28 / 200 sockets (14%); 6.0 connects/s"


def test_status_flags() -> None:
    args = build_parser().parse_args(["status", "--json", "--watch"])
    assert args.json and args.watch == 2.0 and not args.all
    assert build_parser().parse_args(["status", "--watch", "5"]).watch == 5.0
    assert build_parser().parse_args(["status"]).watch is None


@pytest.mark.parametrize("seconds", ["0.1", "0", "nan"])
def test_watch_has_a_floor(seconds: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--watch", seconds], env={}) == 2
    assert "--watch" in capsys.readouterr().err


def test_unreachable_redis_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from polysocket_cli.processes import free_port

    assert main(["status", "--redis-url", f"redis://127.0.0.1:{free_port()}/0"], env={}) == 1
    assert "cannot reach Redis" in capsys.readouterr().err
