"""``polysocket relay`` with slots and ACME, as processes: each relay leases a slot, gets the slot's
certificate from pebble (DNS-01 through LocalStack's Route 53), registers its A records and serves
HTTPS under its slot name; a clean stop withdraws the records and releases the slot, which the next
relay takes with the stored certificate; a killed relay's lease runs out.

The HTTPS client resolves ``x.{slot}.{domain}`` through the DNS server that serves the zone from
Route 53, connects to the address it gets (loopback), and verifies the chain against pebble's root
with SNI ``x.{slot}.{domain}``.
"""

from __future__ import annotations

import contextlib
import os
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
from cryptography import x509
from dnslib import QTYPE, DNSRecord

from polysocket_cli.processes import REPO_ROOT, free_port
from polysocket_core.control import Keys

from .conftest import a_records
from .pebble import Pebble
from .route53_dns import Route53DNS

pytestmark = pytest.mark.cloud

LEASE_TTL_S = 3


def resolve(dns: Route53DNS, name: str) -> str:
    answer = DNSRecord.parse(DNSRecord.question(name, "A").send("127.0.0.1", dns.port, timeout=5))
    addresses = [str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A]
    assert addresses, f"{name} does not resolve"
    return addresses[0]


def https_get(dns: Route53DNS, host: str, port: int, path: str, root_pem: str) -> tuple[str, x509.Certificate]:
    """GET https://{host}:{port}{path}, the address from DNS, verified against ``root_pem``."""
    ctx = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection((resolve(dns, host), port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return b"".join(chunks).decode(errors="replace"), x509.load_der_x509_certificate(der)


class Relays:
    def __init__(self, pebble: Pebble, redis_url: str, zone: tuple[str, str], log_dir: Path) -> None:
        self.pebble = pebble
        self.redis_url = redis_url
        self.zone_id, zone_name = zone
        self.domain = f"relay.{zone_name}"
        tag = uuid.uuid4().hex[:8]
        self.key_prefix = f"r{tag}:"
        self.store_prefix = f"polysocket-test-{tag}/"
        self.log_dir = log_dir
        self.procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def start(self, node_id: str) -> tuple[subprocess.Popen[bytes], int]:
        """A relay as the fleet starts it: its settings in POLYSOCKET_* variables."""
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1",
               "POLYSOCKET_HOST": "127.0.0.1", "POLYSOCKET_PORT": str(port), "POLYSOCKET_NODE_ID": node_id,
               "POLYSOCKET_REDIS_URL": self.redis_url, "POLYSOCKET_KEY_PREFIX": self.key_prefix,
               "POLYSOCKET_RELAY_DOMAIN": f"{self.domain}:{port}", "POLYSOCKET_SLOT_COUNT": "3",
               "POLYSOCKET_SLOT_LEASE_TTL": str(LEASE_TTL_S),
               "POLYSOCKET_ROUTE53_ZONE_ID": self.zone_id, "POLYSOCKET_PUBLIC_IP": "127.0.0.1",
               "POLYSOCKET_ROUTE53_INSYNC_POLL": "0.2",
               "POLYSOCKET_ACME_DIRECTORY": self.pebble.directory_url,
               "POLYSOCKET_ACME_CA_BUNDLE": self.pebble.ca_bundle, "POLYSOCKET_ACME_TIMEOUT": "60",
               "POLYSOCKET_CERT_PREFIX": self.store_prefix, "POLYSOCKET_DRAIN_GRACE": "0"}
        log = open(self.log_dir / f"{node_id}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([sys.executable, "-m", "polysocket_cli", "relay"], env=env, cwd=REPO_ROOT,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.procs[node_id] = (proc, port)
        return proc, port

    def wait_registered(self, node_id: str, r: redis.Redis, timeout_s: float = 60) -> str:
        """The node's fqdn once it is registered in the control plane (after slot, certificate and
        DNS records) and listening."""
        proc, port = self.procs[node_id]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert proc.poll() is None, self.log(node_id)
            fqdn = r.hget(Keys(self.key_prefix).node(node_id), "fqdn")
            if fqdn:  # the node registers just before it listens
                with contextlib.suppress(ConnectionRefusedError), \
                        socket.create_connection(("127.0.0.1", port), timeout=5):
                    return str(fqdn.decode())
            time.sleep(0.1)
        raise TimeoutError(f"{node_id} not registered after {timeout_s} s:\n{self.log(node_id)}")

    def log(self, node_id: str) -> str:
        return (self.log_dir / f"{node_id}.log").read_text(errors="replace")[-3000:]

    def stop_all(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def relays(pebble: Pebble, valkey: str, zone: tuple[str, str], tmp_path: Path) -> Iterator[Relays]:
    fleet = Relays(pebble, valkey, zone, tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def test_relays_lease_slots_and_serve_https_with_the_slot_certificate(
        relays: Relays, pebble: Pebble, route53: Any, route53_dns: Route53DNS) -> None:
    root = pebble.root_pem()
    r = redis.Redis.from_url(relays.redis_url)
    orders = pebble.orders()
    for node_id in ("n1", "n2"):
        relays.start(node_id)
    fqdn = {n: relays.wait_registered(n, r) for n in ("n1", "n2")}
    slot = {n: f.split(".", 1)[0] for n, f in fqdn.items()}
    assert sorted(slot.values()) == ["s00", "s01"]
    assert pebble.orders() == orders + 2
    records = a_records(route53, relays.zone_id)
    serial = {}
    for n in ("n1", "n2"):
        port = relays.procs[n][1]
        host = f"{slot[n]}.{relays.domain}"
        assert fqdn[n] == f"{host}:{port}"  # what the router hands out: {uniq}.{fqdn}
        assert records[host] == records[f"*.{host}"] == (60, ["127.0.0.1"])
        answer, cert = https_get(route53_dns, f"x7k.{host}", port, "/healthz", root)
        assert answer.startswith("HTTP/1.1 200"), answer
        serial[n] = cert.serial_number
        assert r.get(f"{relays.key_prefix}slot:{slot[n]}") == n.encode()

    # SIGTERM: n1 drains, withdraws its records, releases its slot
    n1, _ = relays.procs["n1"]
    n1.send_signal(signal.SIGTERM)
    assert n1.wait(30) == 0, relays.log("n1")
    assert r.exists(f"{relays.key_prefix}slot:{slot['n1']}") == 0
    assert f"{slot['n1']}.{relays.domain}" not in a_records(route53, relays.zone_id)

    # the next relay takes the freed slot and serves the stored certificate: no new order
    relays.start("n3")
    assert relays.wait_registered("n3", r).split(".", 1)[0] == slot["n1"]
    port3 = relays.procs["n3"][1]
    answer, cert = https_get(route53_dns, f"q.{slot['n1']}.{relays.domain}", port3, "/healthz", root)
    assert answer.startswith("HTTP/1.1 200") and cert.serial_number == serial["n1"]
    assert pebble.orders() == orders + 2

    # SIGKILL: n2's lease is not released, it runs out after the lease TTL
    n2, _ = relays.procs["n2"]
    n2.kill()
    n2.wait(10)
    lease = f"{relays.key_prefix}slot:{slot['n2']}"
    assert r.get(lease) == b"n2"
    deadline = time.monotonic() + LEASE_TTL_S + 5
    while r.exists(lease) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.exists(lease) == 0

    n3, _ = relays.procs["n3"]
    n3.send_signal(signal.SIGTERM)
    assert n3.wait(30) == 0, relays.log("n3")
    assert r.exists(f"{relays.key_prefix}slot:{slot['n1']}") == 0
    r.close()


def test_a_relay_that_lost_its_slot_drains_and_leaves_the_new_holders_records(
        relays: Relays, route53: Any) -> None:
    """Its lease ran out (say Redis was unreachable for longer than the TTL) and another node took
    the slot and UPSERTed the slot's records to its own address: the old relay drains and exits,
    and neither deletes those records nor the new holder's lease."""
    r = redis.Redis.from_url(relays.redis_url)
    relays.start("old")
    slot = relays.wait_registered("old", r).split(".", 1)[0]
    host = f"{slot}.{relays.domain}"
    lease = f"{relays.key_prefix}slot:{slot}"
    r.set(lease, "new", px=60_000)
    route53.change_resource_record_sets(HostedZoneId=relays.zone_id, ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": 60,
                                                   "ResourceRecords": [{"Value": "127.0.0.2"}]}}
        for name in (host, f"*.{host}")]})
    old, _ = relays.procs["old"]
    assert old.wait(LEASE_TTL_S + 30) == 0, relays.log("old")
    assert "lease lost" in relays.log("old")
    assert r.get(lease) == b"new"
    records = a_records(route53, relays.zone_id)
    assert records[host] == records[f"*.{host}"] == (60, ["127.0.0.2"])
    r.close()
