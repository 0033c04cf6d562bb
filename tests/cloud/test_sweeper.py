"""The sweeper: A records of nodes no longer live go, live nodes' and everything else stay -- by hand
(the command), in one relay's periodic sweep (``RecordSweeper``, its grace clock shared in Redis, one
sweep at a time), and as deployed: two relay processes, one SIGKILLed, the other removes its records
with no command from the test. Real LocalStack Route 53, real Valkey, real relay processes."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from polysocket_cli.processes import Stack
from polysocket_core.control import Keys
from relay_node.control.aws.route53 import sweep_records
from relay_node.control.aws.settings import CloudSettings
from relay_node.control.aws.sweep import live_fqdns_from_redis
from relay_node.control.aws.sweep import main as sweep_main
from relay_node.control.aws.sweeper import RecordSweeper

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


@pytest.fixture
async def valkey_client(valkey: str) -> AsyncIterator[aioredis.Redis]:
    """The session's Valkey (other tests' keys stay: each test here uses a key prefix of its own)."""
    client = aioredis.Redis.from_url(valkey)
    yield client
    await client.aclose()


def fresh_keys() -> Keys:
    return Keys(f"sw{uuid.uuid4().hex[:8]}:")


async def _register(r: aioredis.Redis, keys: Keys, node: str, fqdn: str) -> None:
    await r.sadd(keys.nodes, node)
    await r.hset(keys.node(node), mapping={"fqdn": fqdn})
    await r.set(keys.alive(node), "1", px=60_000)


async def test_the_fleet_shares_one_grace_clock_and_sweeps_one_at_a_time(
        route53: Any, zone: tuple[str, str], valkey_client: aioredis.Redis) -> None:
    """Two relays' sweepers (n1's and n4's): a dead node's records go once they were missing for the
    grace, whichever relay saw them first; a node that registered meanwhile (it was starting) keeps
    its own. Ticks at once: one sweeps, the other finds the lock taken or the fleet swept lately."""
    zone_id, relay, untouched = _fleet(route53, zone)
    keys = fresh_keys()
    r = valkey_client
    await _register(r, keys, "n1", f"n1.{relay}:443")
    grace = 1.0

    def sweeper(fqdn: str) -> RecordSweeper:
        return RecordSweeper(r, keys, zone_id=zone_id, own_fqdn=fqdn, interval_s=30, grace_s=grace, route53=route53)

    one, four = sweeper(f"n1.{relay}:443"), sweeper(f"n4.{relay}:443")
    assert await one.tick() == []  # n2 and n3 seen missing: their clocks start
    assert set(await r.hkeys(keys.sweep_absent)) == {f"{p}n{i}.{relay}".encode() for p in ("", "*.") for i in (2, 3)}
    assert await four.tick() is None  # the fleet swept lately: n4 skips
    await _register(r, keys, "n3", f"n3.{relay}:443")  # n3 finished starting
    await asyncio.sleep(grace)  # the grace passes (a lower bound only: any delay keeps the test true)
    await r.delete(keys.sweep_recent)  # as after half an interval
    results = await asyncio.gather(one.tick(), four.tick())
    swept = [x for x in results if x is not None]
    assert swept == [sorted([f"n2.{relay}", f"*.n2.{relay}"])], results  # exactly one relay swept, n1's clock
    assert set(a_records(route53, zone_id)) == {f"n1.{relay}", f"*.n1.{relay}", f"n3.{relay}", f"*.n3.{relay}",
                                                *untouched}
    assert one.removed.value + four.removed.value == 2 and one.sweeps.value + four.sweeps.value == 2
    assert await r.hlen(keys.sweep_absent) == 0 and await r.exists(keys.sweep_lock) == 0


async def test_a_failing_sweep_is_counted_and_the_sweeper_keeps_going(
        route53: Any, valkey_client: aioredis.Redis) -> None:
    """Route 53 refuses every sweep (no such zone): each tick fails, is counted, and the next comes."""
    s = RecordSweeper(valkey_client, fresh_keys(), zone_id="ZNOSUCHZONE", own_fqdn="n1.relay.test",
                      interval_s=0.2, grace_s=1, route53=route53)
    s.start()
    try:
        deadline = time.monotonic() + 60  # a bound on waiting only; the assertion is on the count
        while s.failures.value < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert s.failures.value >= 3 and s._task is not None and not s._task.done()
        assert s.failure_log.streak == s.failures.value
    finally:
        await s.stop()


# The relay as deployed, scaled to seconds: heartbeat TTL 1 s, INSYNC given up after 5 s (LocalStack
# is INSYNC at once), one sweep a second. Grace = max(1, 5) + 1 = 6 s; the documented bound from the
# SIGKILL is heartbeat TTL + grace + 2 intervals = 9 s (docs/deploy.md, "Stale records").
HEARTBEAT_TTL_S = 1.0
SWEEP_SETTINGS = CloudSettings(zone_id="Z", insync_timeout_s=5.0, record_sweep_interval_s=1.0)
GRACE_S = SWEEP_SETTINGS.record_sweep_grace_s(HEARTBEAT_TTL_S)
BOUND_S = SWEEP_SETTINGS.record_sweep_bound_s(HEARTBEAT_TTL_S)
# On top of the bound: the relay's own calls to LocalStack (a listing and a delete, each up to a few
# seconds on this shared 2-core machine when LocalStack is busy) and this test's 0.2 s polling.
SLACK_S = 30.0


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_a_live_relay_removes_a_sigkilled_relays_records(
        localstack: Any, route53: Any, zone: tuple[str, str]) -> None:
    zone_id, domain = zone
    relay = f"relay.{domain}"
    stack = Stack()
    try:
        stack.start_valkey()
        flags = ["--route53-zone-id", zone_id, "--route53-insync-poll", "0.1", "--route53-insync-timeout",
                 str(SWEEP_SETTINGS.insync_timeout_s), "--record-sweep-interval",
                 str(SWEEP_SETTINGS.record_sweep_interval_s), "--heartbeat-ttl", str(HEARTBEAT_TTL_S),
                 "--drain-grace", "0"]
        env = dict(localstack.client_env())
        n1 = stack.start_relay("n1", fqdn=f"n1.{relay}:443", extra=[*flags, "--public-ip", "203.0.113.1"], env=env)
        n2 = stack.start_relay("n2", fqdn=f"n2.{relay}:443", extra=[*flags, "--public-ip", "203.0.113.2"], env=env)
        records = a_records(route53, zone_id)
        assert records[f"n2.{relay}"][1] == records[f"*.n2.{relay}"][1] == ["203.0.113.2"], records

        t0 = time.monotonic()
        n2.signal(signal.SIGKILL)  # no drain, no DELETE: only a live relay's sweep can remove them
        n2.popen.wait(10)
        gone = {f"n2.{relay}", f"*.n2.{relay}"}
        deadline = t0 + BOUND_S + SLACK_S
        while gone & set(a_records(route53, zone_id)) and time.monotonic() < deadline:
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        remaining = a_records(route53, zone_id)
        assert not gone & set(remaining), (f"still there {elapsed:.1f} s after SIGKILL", remaining)
        # Never before the grace: the first sight of n2 missing is after the SIGKILL (delays only make
        # this later), so an early delete would mean the grace was not kept.
        assert elapsed >= GRACE_S, elapsed
        assert remaining[f"n1.{relay}"][1] == remaining[f"*.n1.{relay}"][1] == ["203.0.113.1"]
        assert _metric(n1.port, "polysocket_dns_records_swept_total") == 2
        assert _metric(n1.port, "polysocket_dns_sweep_failures_total") == 0
        print(f"\nn2's records removed by n1 {elapsed:.1f} s after SIGKILL (grace {GRACE_S:g} s, "
              f"documented bound {BOUND_S:g} s)")
    finally:
        stack.stop()
