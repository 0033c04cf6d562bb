"""The relay as deployed (issue 18, item 5): ``terraform apply`` of infra/ with its defaults (HTTPS, slot
mode) against LocalStack and moto, two relays started from a relay-only install with the environment of
the task definition Terraform stored, Redis over TLS with AUTH for router, relays and ``polysocket
token``, Chromium echoing over HTTPS through a slot name it resolves through Route 53, then a relay
SIGKILLed and its records removed by the other relay's sweeper with no command from the test.

Everything is brought up by ``emulated_cloud.py``, the module ``make cloud`` runs; its docstring lists
what runs where and the only settings that differ from Fargate (loopback substitutions).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from polysocket_cli.processes import REPO_ROOT
from polysocket_core.settings import resolve
from relay_node.compiled import HOT_MODULES
from relay_node.settings import RelayConfig

from .conftest import a_records
from .emulated_cloud import RELAY_DOMAIN, EmulatedCloud, emulated_cloud, relay_venv
from .netns_browser import CHROMIUM, run_browser

pytestmark = pytest.mark.cloud

TEXT = 'héllo ✓ 日本語 🎉 "quotes" <tag> & ; % + = ? # /'
BINARY = bytes(range(256)) + b"\x00\xff" * 300
# LocalStack's Route 53 calls and a loaded 2-core machine, on top of the bound the docs state
SWEEP_SLACK_S = 30


@pytest.fixture(scope="session")
def relay_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The relay-only venv, built once per session (or the one PSTEST_RELAY_VENV names, rebuilt if stale)."""
    given = os.environ.get("PSTEST_RELAY_VENV")
    return relay_venv(Path(given) if given else tmp_path_factory.mktemp("relay") / "venv")


@pytest.fixture
def cloud(tmp_path: Path, relay_python: Path) -> Iterator[EmulatedCloud]:
    with emulated_cloud(tmp_path, relay_python) as c:
        yield c


@pytest.mark.timeout(900)
def test_the_fleet_as_deployed_echoes_over_https_and_sweeps_a_killed_relay(cloud: EmulatedCloud,
                                                                          relay_python: Path) -> None:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is not installed (make deps installs Debian's chromium)"
    assert cloud.pebble is not None and cloud.dns is not None and cloud.router is not None
    env = cloud.task_environment
    # the task definition as Terraform stored it: HTTPS slot mode by default, the control plane over TLS
    assert (env["POLYSOCKET_PORT"], env["POLYSOCKET_RELAY_DOMAIN"], env["POLYSOCKET_SLOT_COUNT"]) == (
        "443", RELAY_DOMAIN, "20")
    assert env["POLYSOCKET_ACME_DIRECTORY"] == cloud.pebble.directory_url
    assert env["POLYSOCKET_CERT_STORE"] == "secretsmanager" and "RELAY_DOMAIN" not in env
    assert env["POLYSOCKET_REDIS_URL"] == cloud.redis_url and cloud.redis_url.startswith("rediss://polysocket:")
    # the relay-only install: the router's dependencies are not there
    probe = subprocess.run([str(relay_python), "-c", "import fastapi"], capture_output=True)
    assert probe.returncode != 0 and b"No module named 'fastapi'" in probe.stderr
    config = resolve(RelayConfig, env)
    grace = config.cloud.record_sweep_grace_s(config.heartbeat_ttl_s)
    bound = config.cloud.record_sweep_bound_s(config.heartbeat_ttl_s)

    relays = [cloud.start_relay(), cloud.start_relay()]
    fqdns = [cloud.wait_registered(r) for r in relays]
    hosts = [f.rsplit(":", 1)[0] for f in fqdns]
    assert sorted(h.split(".", 1)[0] for h in hosts) == ["s00", "s01"]
    route53 = cloud.aws("route53")
    records = a_records(route53, cloud.zone_id)
    for host in hosts:
        assert records[host] == records[f"*.{host}"] == (60, ["127.0.0.1"])

    # Chromium over HTTPS, resolving through the Route 53 bridge, WebSocket deleted: XHR through a slot relay
    seen = run_browser({
        "work_dir": str(cloud.work), "host_netns": f"/proc/{os.getpid()}/ns/net", "dns_port": cloud.dns.port,
        "ports": [cloud.router.port, *(r.port for r in relays)], "chromium": CHROMIUM,
        "chromium_args": cloud.chromium_args(), "page": f"{cloud.router_url}/client/polysocket.js",
        "router": cloud.router_url, "token": cloud.token, "target": cloud.echo_url,
        "text": TEXT, "binary_b64": base64.b64encode(BINARY).decode(),
    }, cloud.work)
    assert seen["page_status"] == 200 and seen["page_errors"] == [], seen
    assert seen["websocket_deleted"] and seen["transport"] == "xhr", seen
    assert seen["messages"] == [{"t": "text", "d": TEXT},
                                {"t": "binary", "d": base64.b64encode(BINARY).decode()}], seen["events"]
    assert any(re.match(r"https://[a-z0-9]+\.s0[01]\." + re.escape(RELAY_DOMAIN) + r":\d+/", u)
               for u in seen["resources"]), seen["resources"]

    for relay in relays:  # the image's build: the hot modules compiled (relay_node/compiled.py), said at start
        assert re.search(rf"serving on https://\S+, compiled by mypyc \({len(HOT_MODULES)} hot modules\)",
                         relay.log.read_text(errors="replace")), relay.log_tail()

    # a crash: SIGKILL one relay; the other one's sweeper deletes its records, nobody asks it to
    killed, alive = relays[1], relays[0]
    cloud.kill_relay(killed)
    t0 = time.monotonic()
    while hosts[1] in (records := a_records(route53, cloud.zone_id)):
        assert alive.proc.poll() is None, alive.log_tail()
        assert time.monotonic() - t0 < bound + SWEEP_SLACK_S, (records, alive.log_tail())
        time.sleep(0.5)
    swept_s = time.monotonic() - t0
    print(f"\nthe live relay swept the killed relay's records {swept_s:.1f} s after the SIGKILL "
          f"(grace {grace:g} s, bound {bound:g} s as docs/deploy.md derives them)")
    assert f"*.{hosts[1]}" not in records
    assert records[hosts[0]] == records[f"*.{hosts[0]}"] == (60, ["127.0.0.1"])  # its own stay


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (from /proc/PID/task/*/children)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = {int(c) for c in (task / "children").read_text().split()}
                todo += list(children - found)
                found |= children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(900)
def test_make_cloud_prints_a_demo_url_that_answers_and_ctrl_c_takes_everything_down(
        relay_python: Path, tmp_path: Path) -> None:
    """``make cloud``'s command: up to the demo URL, the URL answers (the demo page, from the HTTPS router),
    then SIGINT (Ctrl-C) and every process it started is gone."""
    env = {**os.environ, "PSTEST_RELAY_VENV": str(relay_python.parents[1]), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "make-cloud.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.cloud.emulated_cloud"], cwd=REPO_ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 600
        while "Ctrl-C stops everything." not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            started |= descendants(proc.pid)
            time.sleep(0.5)
        started |= descendants(proc.pid)
        text = log.read_text(errors="replace")
        [url] = re.findall(r"^demo: (https://localhost:\d+/client/demo\.html\?\S+)$", text, re.M)
        [command] = [line.strip() for line in text.splitlines() if line.strip().startswith(CHROMIUM)]
        assert "--ignore-certificate-errors-spki-list=" in command and url in command
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # the pin is Chromium's business
        with urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=insecure)).open(url, timeout=10) as r:
            assert r.status == 200 and b"PolySocket" in r.read()
        assert len(started) >= 6, started  # redis, LocalStack, moto, pebble, router, echo, two relays
        proc.send_signal(signal.SIGINT)
        assert proc.wait(300) == 0, log.read_text(errors="replace")[-4000:]
        assert "everything torn down" in log.read_text(errors="replace")
        assert not [p for p in started if alive(p)], [Path(f"/proc/{p}/cmdline").read_bytes()[:200]
                                                      for p in started if alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
