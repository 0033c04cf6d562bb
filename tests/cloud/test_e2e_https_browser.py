"""End to end, as in production but on loopback: Chromium, over HTTPS only, through relay names that
resolve through Route 53, to relays that got their certificates from an ACME CA by DNS-01.

- LocalStack (Route 53, CloudWatch, Secrets Manager), Valkey, pebble and the DNS server that answers
  from LocalStack's Route 53 are the session fixtures of ``conftest.py`` / ``acme_env.py``.
- Two ``polysocket relay`` processes started with the fleet's flags (``--relay-domain``,
  ``--route53-zone-id``, ``--public-ip 127.0.0.1``, ``--acme-directory`` pebble, ``--cert-store
  secretsmanager``, ``--cloudwatch-namespace``): each leases a slot, orders the slot's certificate,
  UPSERTs ``{slot}`` and ``*.{slot}`` and serves HTTPS. A ``polysocket router`` (HTTPS, a trustme
  certificate for ``localhost``) and an echo target come from :class:`Stack`.
- Chromium runs in a network namespace of its own (``unshare --net --mount``, see
  ``netns_browser.py``) whose ``/etc/resolv.conf`` points at the Route 53 DNS server: the page
  ``https://localhost:{router}/…`` deletes ``window.WebSocket``, loads ``client/polysocket.js`` and
  echoes text and binary through ``https://{uniq}.{slot}.relay.{zone}:{port}``, a name the browser
  resolves through the zone's records. Trust: Chromium is started with
  ``--ignore-certificate-errors-spki-list`` holding the SPKI hashes of pebble's root and
  intermediate (which sign every relay certificate of this run) and of the router's certificate;
  Debian's Chromium reads trust anchors only from an NSS database and ``certutil`` (libnss3-tools)
  is not installed here. That pin does not check names, so the names and the issuer of the relay
  certificate are checked separately, from Python, against pebble's root.
- Then scale-in: SIGTERM one relay (its records go, its lease is released), SIGKILL the other (its
  lease runs out, its records stay until ``python -m relay_node.control.aws.sweep`` removes them).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from cryptography import x509
from dnslib import QTYPE, DNSRecord

from polysocket_cli.processes import REPO_ROOT, Stack, free_port
from polysocket_core.control import Keys

from .conftest import a_records
from .netns_browser import CHROMIUM, CHROMIUM_ARGS, run_browser, spki_hash
from .pebble import Pebble
from .route53_dns import Route53DNS

pytestmark = pytest.mark.cloud

LEASE_TTL_S = 10  # refreshed every third; 3 s lost leases while the loaded machine started a relay
HEARTBEAT_TTL_S = 4
TEXT = 'héllo ✓ 日本語 🎉 "quotes" <tag> & ; % + = ? # /'
BINARY = bytes(range(256)) + b"\x00\xff" * 300


def resolve(dns: Route53DNS, name: str) -> str:
    answer = DNSRecord.parse(DNSRecord.question(name, "A").send("127.0.0.1", dns.port, timeout=5))
    addresses = [str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A]
    assert addresses, f"{name} does not resolve"
    return addresses[0]


def served_certificate(dns: Route53DNS, host: str, port: int, root_pem: str) -> x509.Certificate:
    """The certificate the relay serves for ``host`` (address from DNS), verified against ``root_pem``."""
    ctx = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection((resolve(dns, host), port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


class Fleet:
    """Relays started as the fleet starts them: ``polysocket relay`` with its flags."""

    def __init__(self, pebble: Pebble, redis_url: str, key_prefix: str, zone: tuple[str, str], log_dir: Path,
                 namespace: str) -> None:
        self.pebble, self.redis_url, self.key_prefix = pebble, redis_url, key_prefix
        self.zone_id, zone_name = zone
        self.domain = f"relay.{zone_name}"
        self.cert_prefix = f"polysocket-e2e-{uuid.uuid4().hex[:8]}/"
        self.namespace = namespace
        self.log_dir = log_dir
        self.procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def start(self, node_id: str) -> None:
        port = free_port()
        args = [sys.executable, "-m", "polysocket_cli", "relay", "--host", "127.0.0.1", "--port", str(port),
                "--node-id", node_id, "--redis-url", self.redis_url, "--key-prefix", self.key_prefix,
                "--relay-domain", f"{self.domain}:{port}", "--slot-count", "3",
                "--slot-lease-ttl", str(LEASE_TTL_S), "--heartbeat-ttl", str(HEARTBEAT_TTL_S),
                "--route53-zone-id", self.zone_id, "--public-ip", "127.0.0.1", "--route53-insync-poll", "0.2",
                "--acme-directory", self.pebble.directory_url, "--acme-ca-bundle", self.pebble.ca_bundle,
                "--acme-timeout", "60", "--cert-store", "secretsmanager", "--cert-prefix", self.cert_prefix,
                "--cloudwatch-namespace", self.namespace, "--cloudwatch-interval", "1",
                "--cloudwatch-dimension-value", "e2e", "--drain-grace", "0"]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        log = open(self.log_dir / f"{node_id}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(args, env=env, cwd=self.log_dir, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs[node_id] = (proc, port)

    def wait_registered(self, node_id: str, r: redis.Redis, timeout_s: float = 90) -> str:
        proc, port = self.procs[node_id]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert proc.poll() is None, self.log(node_id)
            fqdn = r.hget(Keys(self.key_prefix).node(node_id), "fqdn")
            if fqdn:  # the node registers just before it listens
                with contextlib.suppress(ConnectionRefusedError), \
                        socket.create_connection(("127.0.0.1", port), timeout=5):
                    return fqdn.decode() if isinstance(fqdn, bytes) else str(fqdn)
            time.sleep(0.1)
        raise TimeoutError(f"{node_id} not registered after {timeout_s} s:\n{self.log(node_id)}")

    def log(self, node_id: str) -> str:
        return (self.log_dir / f"{node_id}.log").read_text(errors="replace")[-3000:]

    def kill_all(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def e2e_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Stack runs `python -m polysocket_cli` in a temporary directory: make it import this checkout.
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    return tmp_path


@pytest.fixture
def e2e_stack(valkey: str, e2e_dir: Path) -> Iterator[Stack]:
    log_dir = e2e_dir / "stack"
    log_dir.mkdir()
    s = Stack(log_dir=log_dir, redis_url=valkey, key_prefix=f"e{uuid.uuid4().hex[:8]}:")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def fleet(pebble: Pebble, e2e_stack: Stack, zone: tuple[str, str], e2e_dir: Path) -> Iterator[Fleet]:
    f = Fleet(pebble, e2e_stack.redis_url, e2e_stack.key_prefix, zone, e2e_dir,
              namespace=f"PolysocketE2E/{uuid.uuid4().hex[:8]}")
    try:
        yield f
    finally:
        f.kill_all()


def test_chromium_echoes_over_https_through_route53_names_then_the_fleet_scales_in(
        fleet: Fleet, e2e_stack: Stack, pebble: Pebble, route53: Any, cloudwatch: Any, route53_dns: Route53DNS,
        e2e_dir: Path) -> None:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is not installed (make deps installs Debian's chromium)"
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    r = redis.Redis.from_url(e2e_stack.redis_url)
    keys = Keys(e2e_stack.key_prefix)

    # the server side: two relays (slot, certificate, records), a router over HTTPS, an echo target
    for node_id in ("n1", "n2"):
        fleet.start(node_id)
    ca = trustme.CA()
    router_cert = ca.issue_cert("localhost", "127.0.0.1")
    router_cert.cert_chain_pems[0].write_to_path(str(e2e_dir / "router.pem"))
    router_cert.private_key_pem.write_to_path(str(e2e_dir / "router.key"))
    router = e2e_stack.start_router(env={"POLYSOCKET_SSL_CERTFILE": str(e2e_dir / "router.pem"),
                                     "POLYSOCKET_SSL_KEYFILE": str(e2e_dir / "router.key")})
    echo = e2e_stack.start_echo()
    token = e2e_stack.create_token()
    fqdn = {n: fleet.wait_registered(n, r) for n in ("n1", "n2")}
    slot = {n: f.split(".", 1)[0] for n, f in fqdn.items()}
    assert sorted(slot.values()) == ["s00", "s01"]
    port = {n: fleet.procs[n][1] for n in ("n1", "n2")}
    host = {n: f"{slot[n]}.{fleet.domain}" for n in ("n1", "n2")}

    # Route 53 has both relays' records; each serves a pebble certificate for {slot} and *.{slot}
    records = a_records(route53, fleet.zone_id)
    root_pem, intermediate_pem = pebble.root_pem(), pebble.intermediate_pem()
    intermediate = x509.load_pem_x509_certificate(intermediate_pem.encode())
    for n in ("n1", "n2"):
        assert fqdn[n] == f"{host[n]}:{port[n]}"
        assert records[host[n]] == records[f"*.{host[n]}"] == (60, ["127.0.0.1"])
        cert = served_certificate(route53_dns, f"x9.{host[n]}", port[n], root_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
        assert sorted(names) == sorted([host[n], f"*.{host[n]}"])
        assert cert.issuer == intermediate.subject

    # Chromium, in its own network namespace, resolving through Route 53
    config = {
        "work_dir": str(e2e_dir), "host_netns": f"/proc/{os.getpid()}/ns/net", "dns_port": route53_dns.port,
        "ports": [router.port, *port.values()], "chromium": CHROMIUM,
        "chromium_args": [*CHROMIUM_ARGS, "--ignore-certificate-errors-spki-list=" + ",".join(
            spki_hash(p) for p in (root_pem, intermediate_pem, router_cert.cert_chain_pems[0].bytes().decode()))],
        "page": f"https://localhost:{router.port}/client/polysocket.js",
        "router": f"https://localhost:{router.port}", "token": token, "target": f"ws://127.0.0.1:{echo.port}/",
        "text": TEXT, "binary_b64": base64.b64encode(BINARY).decode(),
    }
    queries_before = len(route53_dns.resolver.queries)
    t_browser = time.monotonic()
    seen = run_browser(config, e2e_dir)
    print(f"\nChromium in its namespace: {time.monotonic() - t_browser:.1f} s")
    assert seen["page_status"] == 200 and seen["page_url"].startswith("https://localhost:"), seen
    assert seen["websocket_deleted"] and seen["transport"] == "xhr", seen
    assert seen["page_errors"] == [], seen
    assert seen["messages"] == [{"t": "text", "d": TEXT},
                                {"t": "binary", "d": base64.b64encode(BINARY).decode()}], seen["events"]
    relay_urls = {m.group(0) for u in seen["resources"]
                  if (m := re.match(r"https://[a-z0-9]+\.(s0[01])\." + re.escape(fleet.domain) + r":\d+/", u))}
    assert relay_urls, seen["resources"]
    relay_name = next(iter(relay_urls))[len("https://"):].rstrip("/").rsplit(":", 1)[0]
    assert (relay_name, "A") in route53_dns.resolver.queries[queries_before:]  # the browser asked Route 53
    print(f"echoed through https://{relay_name}")

    # CloudWatch has both relays' datapoints (one namespace, one dimension: the fleet's)
    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    dims = [{"Name": "AutoScalingGroupName", "Value": "e2e"}]
    for metric in ("OpenSockets", "Utilization"):
        points = cloudwatch.get_metric_statistics(Namespace=fleet.namespace, MetricName=metric, Dimensions=dims,
                                                  StartTime=t0, EndTime=end, Period=60,
                                                  Statistics=["SampleCount"])["Datapoints"]
        assert sum(p["SampleCount"] for p in points) >= 2, (metric, points)

    # scale-in, clean: SIGTERM drains n1, withdraws its records, releases its slot
    n1, _ = fleet.procs["n1"]
    n1.send_signal(signal.SIGTERM)
    assert n1.wait(60) == 0, fleet.log("n1")
    records = a_records(route53, fleet.zone_id)
    assert host["n1"] not in records and f"*.{host['n1']}" not in records
    assert r.exists(f"{e2e_stack.key_prefix}slot:{slot['n1']}") == 0

    # a crash: SIGKILL n2; its lease runs out, its records stay until the sweeper removes them
    n2, _ = fleet.procs["n2"]
    n2.kill()
    n2.wait(10)
    lease = f"{e2e_stack.key_prefix}slot:{slot['n2']}"
    deadline = time.monotonic() + max(LEASE_TTL_S, HEARTBEAT_TTL_S) + 10
    while (r.exists(lease) or r.exists(keys.alive("n2"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.exists(lease) == 0 and r.exists(keys.alive("n2")) == 0
    records = a_records(route53, fleet.zone_id)
    assert records[host["n2"]] == records[f"*.{host['n2']}"] == (60, ["127.0.0.1"])
    sweep = subprocess.run(
        [sys.executable, "-m", "relay_node.control.aws.sweep", "--zone-id", fleet.zone_id,
         "--relay-domain", fleet.domain, "--redis-url", e2e_stack.redis_url, "--key-prefix", e2e_stack.key_prefix],
        capture_output=True, timeout=60, cwd=e2e_dir, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert sweep.returncode == 0, sweep.stderr.decode(errors="replace")
    assert sorted(sweep.stdout.decode().split()) == sorted(
        ["deleted", "deleted", host["n2"], f"*.{host['n2']}"]), sweep.stdout
    records = a_records(route53, fleet.zone_id)
    assert not any(name.endswith(fleet.domain) for name in records), records
    r.close()
