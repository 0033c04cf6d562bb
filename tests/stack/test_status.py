"""`polysocket status` against a real Valkey and two real relays: both listed, the socket a connect
opened counted, the node sent SIGTERM shown draining; and the relay's stats report read back
through the same code the command uses, giving the connect rate."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from polysocket_cli.processes import REPO_ROOT, Stack
from polysocket_cli.status import read_fleet
from polysocket_core.control import Keys
from polysocket_core.fleet import fleet_rows, stats_key
from relay_node.control.fleetstats import FleetStats
from tests.support.processes import Output
from tests.support.wire_client import connect

pytestmark = pytest.mark.stack


@pytest.fixture
def own_stack() -> Iterator[Stack]:
    s = Stack()
    s.start_valkey()
    try:
        yield s
    finally:
        s.stop()


def cli_status(stack: Stack, *extra: str) -> str:
    """`polysocket status` as an operator runs it; its output."""
    out = subprocess.run([sys.executable, "-m", "polysocket_cli", "status", "--redis-url", stack.redis_url, *extra],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def status(stack: Stack) -> dict[str, Any]:
    return dict(json.loads(cli_status(stack, "--json")))


def nodes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in report["nodes"]}


async def wait_status(stack: Stack, ok: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    report = await asyncio.to_thread(status, stack)
    while not ok(report) and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        report = await asyncio.to_thread(status, stack)
    return report


async def test_status_lists_nodes_sockets_and_draining(own_stack: Stack) -> None:
    # a draining node with a socket serves it for the drain grace: long enough to be seen draining
    relays = {n: own_stack.start_relay(n, extra=["--capacity", "50", "--drain-grace", "30"])
              for n in ("node1", "node2")}
    router = own_stack.start_router()
    echo = own_stack.start_echo()
    token = own_stack.create_token()

    report = await asyncio.to_thread(status, own_stack)
    assert report["version"] == 1
    assert set(nodes(report)) == {"node1", "node2"}
    for node in report["nodes"]:
        assert node["state"] == "live" and node["capacity"] == 50 and node["fqdn"].startswith(node["id"])
        assert node["age_s"] is not None and node["age_s"] >= 0
    assert report["totals"]["live"] == 2 and report["totals"]["capacity"] == 100

    async with httpx.AsyncClient(timeout=30) as http:
        conn = await connect(http, f"http://127.0.0.1:{router.port}", f"ws://127.0.0.1:{echo.port}/", token=token)
        holder = conn.fqdn.split(".")[1]
        report = await wait_status(own_stack, lambda r: r["totals"]["sockets"] == 1
                                   and all(n["heartbeat_age_s"] is not None for n in r["nodes"]))
        by_id = nodes(report)
        assert by_id[holder]["sockets"] == 1 and by_id[holder]["utilization"] == pytest.approx(1 / 50)
        assert report["totals"]["sockets"] == 1
        for node in report["nodes"]:  # a heartbeat a second, TTL 5 s
            assert 0 <= node["heartbeat_age_s"] <= 5

        other = ({"node1", "node2"} - {holder}).pop()
        relays[holder].signal(signal.SIGTERM)
        report = await wait_status(own_stack, lambda r: nodes(r)[holder]["state"] == "draining")
        assert nodes(report)[holder]["draining"] is True and nodes(report)[holder]["sockets"] == 1
        assert nodes(report)[other]["state"] == "live"
        assert report["totals"] == {**report["totals"], "live": 2, "draining": 1}

        lines = (await asyncio.to_thread(cli_status, own_stack)).splitlines()
        assert lines[0].split()[:3] == ["NODE", "STATE", "SLOT"]
        assert any(line.split()[:2] == [holder, "draining"] for line in lines)
        await conn.close()


async def test_stats_report_gives_the_connect_rate(own_stack: Stack) -> None:
    """The relay's publisher (a fake counter and clock) and the command's reader on a real Valkey:
    two reports 10 s apart with 25 sockets opened between them read back as 2.5 connects/s."""
    redis = aioredis.Redis.from_url(own_stack.redis_url)
    keys = Keys()
    opened, clock = [100], [1_000.0]
    stats = FleetStats(redis, keys, "n1", heartbeat_ttl_s=5.0, opened=lambda: opened[0], slot=lambda: "s07",
                       clock=lambda: clock[0])
    try:
        await redis.sadd(keys.nodes, "n1")
        await redis.hset(keys.node("n1"), mapping={"fqdn": "s07.relay.example", "capacity": 10, "sockets": 3,
                                                   "draining": "0", "started_at": 990})
        await redis.set(keys.alive("n1"), "1", px=5000)
        await stats.publish_once()
        [row] = fleet_rows(*await read_fleet(redis, keys))
        assert (row.slot, row.connects_per_s) == ("s07", None)  # one report: no rate yet
        opened[0], clock[0] = 125, 1_010.0
        await stats.publish_once()
        [row] = fleet_rows(*await read_fleet(redis, keys))
        assert row.connects_per_s == pytest.approx(2.5)
        assert row.heartbeat_age_s is not None and 0 <= row.heartbeat_age_s <= 5
        assert 0 < await redis.ttl(stats_key(keys, "n1")) <= 30
        await stats.stop()
        assert await redis.exists(stats_key(keys, "n1")) == 0
    finally:
        await redis.aclose()


def test_watch_redraws_until_ctrl_c(own_stack: Stack) -> None:
    """`--watch 1 --json`: one document a line per refresh; a relay that registers in between shows up
    in a later one; Ctrl-C ends it with status 0."""
    proc = subprocess.Popen([sys.executable, "-m", "polysocket_cli", "status", "--redis-url", own_stack.redis_url,
                             "--json", "--watch", "1"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    try:
        output.wait_for('"nodes":[]', timeout=30)
        own_stack.start_relay("node1")
        output.wait_for('"id":"node1"', timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    lines = output.finish().splitlines()
    assert code == 0, lines
    docs = [json.loads(line) for line in lines]
    assert len(docs) >= 2 and docs[0]["nodes"] == [] and docs[-1]["nodes"][0]["id"] == "node1"
