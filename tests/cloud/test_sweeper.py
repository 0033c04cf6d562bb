"""The sweeper: A records of nodes no longer live go, live nodes' and everything else stay."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from polysocket_cli.processes import Stack
from polysocket_core.control import Keys
from relay_node.control.aws.route53 import RecordSweeper, sweep_records
from relay_node.control.aws.sweep import live_fqdns_from_redis
from relay_node.control.aws.sweep import main as sweep_main

from .conftest import a_records

pytestmark = pytest.mark.cloud


def _create(route53: Any, zone_id: str, records: dict[str, tuple[str, str]]) -> None:
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {"Name": name, "Type": rtype, "TTL": 60,
                                                   "ResourceRecords": [{"Value": value}]}}
        for name, (rtype, value) in records.items()]})


def _fleet(route53: Any, zone: tuple[str, str]) -> tuple[str, str, set[str]]:
    """Nodes n1 (live), n2 and n3 (dead), plus records the sweeper must never touch."""
    zone_id, domain = zone
    relay = f"relay.{domain}"
    nodes = {f"{n}.{relay}": ("A", f"192.0.2.{i}") for i, n in enumerate(("n1", "n2", "n3"), 1)}
    _create(route53, zone_id, {
        **nodes, **{f"*.{name}": v for name, v in nodes.items()},
        relay: ("A", "198.51.100.1"),  # the relay domain itself
        f"www.{domain}": ("A", "198.51.100.2"),  # outside the relay domain
        f"a.b.{relay}": ("A", "198.51.100.3"),  # deeper than a node name
        f"_acme-challenge.n2.{relay}": ("TXT", '"token"'),  # not an A record
    })
    untouched = {relay, f"www.{domain}", f"a.b.{relay}"}
    return zone_id, relay, untouched


def test_sweep_removes_dead_nodes_keeps_live_ones(route53: Any, zone: tuple[str, str]) -> None:
    zone_id, relay, untouched = _fleet(route53, zone)
    live = {f"n1.{relay}:443"}  # as registered in Redis: the fqdn, port allowed

    planned = sweep_records(zone_id, relay, live, client=route53, dry_run=True)
    assert sorted(planned) == sorted([f"n2.{relay}", f"*.n2.{relay}", f"n3.{relay}", f"*.n3.{relay}"])
    assert len(a_records(route53, zone_id)) == 9  # dry run deleted nothing

    assert sorted(sweep_records(zone_id, relay, live, client=route53)) == sorted(planned)
    assert set(a_records(route53, zone_id)) == {f"n1.{relay}", f"*.n1.{relay}", *untouched}
    txt = [r for r in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
           if r["Type"] == "TXT"]
    assert len(txt) == 1
    assert sweep_records(zone_id, relay, live, client=route53) == []  # nothing left to do


def test_sweeper_with_grace_spares_a_node_that_is_starting(route53: Any, zone: tuple[str, str]) -> None:
    """A node between its UPSERT and its Redis registration is not live yet: the periodic sweeper
    deletes only names missing for the whole grace period."""
    zone_id, relay, untouched = _fleet(route53, zone)
    now = [1000.0]
    sweeper = RecordSweeper(zone_id, relay, grace_s=60, client=route53, clock=lambda: now[0])
    live = {f"n1.{relay}"}
    assert sweeper.sweep(live) == []  # first sight of n2, n3: not yet
    now[0] += 30
    live.add(f"n3.{relay}")  # n3 finished starting and registered
    assert sweeper.sweep(live) == []
    now[0] += 31
    assert sorted(sweeper.sweep(live)) == sorted([f"n2.{relay}", f"*.n2.{relay}"])
    assert set(a_records(route53, zone_id)) == {f"n1.{relay}", f"*.n1.{relay}", f"n3.{relay}", f"*.n3.{relay}",
                                                *untouched}
    live.discard(f"n3.{relay}")  # n3 dies later: its clock starts now
    now[0] += 1000
    assert sweeper.sweep(live) == []
    now[0] += 60
    assert sorted(sweeper.sweep(live)) == sorted([f"n3.{relay}", f"*.n3.{relay}"])


def test_sweep_command(route53: Any, zone: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    zone_id, relay, untouched = _fleet(route53, zone)
    args = ["--zone-id", zone_id, "--relay-domain", relay, "--live", f"n1.{relay}", "--live", f"n2.{relay}"]
    assert sweep_main([*args, "--dry-run"]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == [f"would delete *.n3.{relay}", f"would delete n3.{relay}"]
    assert sweep_main(args) == 0
    assert set(a_records(route53, zone_id)) == {f"n1.{relay}", f"*.n1.{relay}", f"n2.{relay}", f"*.n2.{relay}",
                                                *untouched}


async def test_live_set_from_redis(route53: Any, zone: tuple[str, str]) -> None:
    """The command's live set read from a real Valkey: nodes whose heartbeat key is set count, a
    node whose record lingers after its heartbeat expired does not."""

    zone_id, relay, untouched = _fleet(route53, zone)
    stack = Stack()
    try:
        stack.start_valkey()
        keys = Keys("ps:")
        r = aioredis.Redis.from_url(stack.redis_url)
        for node, alive in (("n1", True), ("n2", False)):  # n3 never registered
            await r.sadd(keys.nodes, node)
            await r.hset(keys.node(node), mapping={"fqdn": f"{node}.{relay}:80"})
            if alive:
                await r.set(keys.alive(node), "1", px=60_000)
        await r.aclose()
        assert await live_fqdns_from_redis(stack.redis_url) == {f"n1.{relay}:80"}
        assert await asyncio.to_thread(sweep_main, ["--zone-id", zone_id, "--relay-domain", relay,
                                                    "--redis-url", stack.redis_url]) == 0
        assert set(a_records(route53, zone_id)) == {f"n1.{relay}", f"*.n1.{relay}", *untouched}
    finally:
        stack.stop()
