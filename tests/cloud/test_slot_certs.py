"""Slot certificates end to end, on loopback: slots leased in a real Valkey, certificates ordered
from pebble by DNS-01 through LocalStack's Route 53 (pebble checks the TXT records through a DNS
server that serves the zone from the Route 53 API), stored in LocalStack's Secrets Manager, reused,
renewed, ordered once under the per-slot lock, and served over TLS.

pebble's own log counts the orders it received: that count, not the code under test, says whether
a certificate was reused or ordered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import redis.asyncio as aioredis
from cryptography import x509

from relay_node.control.aws.certs import AcmeDns01, Route53Dns01, SlotCertificates, utcnow
from relay_node.control.aws.certstore import S3Store, SecretsManagerStore
from relay_node.control.aws.settings import CloudSettings
from relay_node.control.aws.slotnode import SlotNode
from relay_node.control.aws.slots import SlotKeys

from .pebble import Pebble
from .route53_dns import Route53DNS

pytestmark = pytest.mark.cloud

DAY = dt.timedelta(days=1)


@dataclass
class Fleet:
    """One test's relay domain (in a fresh hosted zone), Redis key prefix and store prefix."""

    zone_id: str
    domain: str
    redis: aioredis.Redis
    key_prefix: str
    store_prefix: str
    pebble: Pebble
    secrets: Any

    def settings(self, **kw: Any) -> CloudSettings:
        base: dict[str, Any] = dict(
            relay_domain=self.domain, slot_count=3, zone_id=self.zone_id, insync_poll_s=0.2,
            acme_directory=self.pebble.directory_url, acme_ca_bundle=self.pebble.ca_bundle,
            acme_email="ops@example.com", acme_timeout_s=60, cert_prefix=self.store_prefix)
        return CloudSettings(**{**base, **kw})

    def node(self, node_id: str, clock: Callable[[], dt.datetime] | None = None, **kw: Any) -> SlotNode:
        return SlotNode(self.settings(**kw), self.redis, key_prefix=self.key_prefix, node_id=node_id,
                        clock=clock or utcnow)

    def secret(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            self.secrets.get_secret_value(SecretId=f"{self.store_prefix}{name}")["SecretString"])
        return doc


@pytest.fixture
async def fleet(pebble: Pebble, valkey: str, zone: tuple[str, str]) -> AsyncIterator[Fleet]:
    zone_id, zone_name = zone
    r = aioredis.Redis.from_url(valkey)
    tag = uuid.uuid4().hex[:8]
    yield Fleet(zone_id, f"relay.{zone_name}", r, f"t{tag}:", f"polysocket-test-{tag}/", pebble,
                boto3.session.Session().client("secretsmanager"))
    await r.aclose()


async def handshake(ctx: ssl.SSLContext, sni: str, root_pem: str) -> x509.Certificate:
    """Serve ``ctx`` on a loopback port and connect to it with SNI ``sni``, verifying the chain
    against pebble's root and the name; the certificate the server presented."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        client = ssl.create_default_context(cadata=root_pem)
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=sni)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        return x509.load_der_x509_certificate(der)
    finally:
        server.close()


def san(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName))


def txt_records(route53: Any, zone_id: str) -> list[str]:
    sets = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return [r["Name"] for r in sets if r["Type"] == "TXT"]


async def test_nodes_get_their_slots_certificate_and_the_next_holder_reuses_it(
        fleet: Fleet, pebble: Pebble, route53: Any, route53_dns: Route53DNS) -> None:
    root = pebble.root_pem()
    orders = pebble.orders()
    a, b = fleet.node("node-a"), fleet.node("node-b", slot_lease_ttl_s=4.0)
    fqdns = await asyncio.gather(a.start(), b.start())
    assert sorted(fqdns) == [f"s00.{fleet.domain}", f"s01.{fleet.domain}"]
    assert pebble.orders() == orders + 2  # one order per slot

    for node in (a, b):
        assert node.ssl_context is not None and node.certs is not None and node.slot is not None
        served = await handshake(node.ssl_context, f"x.{node.slot}.{fleet.domain}", root)
        assert san(served) == {f"{node.slot}.{fleet.domain}", f"*.{node.slot}.{fleet.domain}"}
        assert format(served.serial_number, "x") == node.certs.current.serial  # type: ignore[union-attr]
        # stored in Secrets Manager, chain and key, under the slot's name
        entry = fleet.secret(f"cert/{node.slot}.{fleet.domain}")
        assert entry["format"] == "polysocket-cert/1" and "PRIVATE KEY" in entry["key_pem"]
        assert entry["serial"] == node.certs.current.serial  # type: ignore[union-attr]
        assert entry["fullchain_pem"].count("BEGIN CERTIFICATE") == 2  # leaf + pebble's intermediate
    with pytest.raises(ssl.SSLCertVerificationError):  # the certificate is for its slot only
        await handshake(a.ssl_context, f"x.s02.{fleet.domain}", root)  # type: ignore[arg-type]
    account = fleet.secret(f"acme-account/127.0.0.1-{pebble.port}/dir")
    assert account["format"] == "polysocket-acme-account/1" and account["uri"].startswith("https://127.0.0.1")
    assert txt_records(route53, fleet.zone_id) == []  # the DNS-01 records were withdrawn
    # pebble checked the challenge through the DNS server that serves Route 53
    assert {(f"_acme-challenge.{s}.{fleet.domain}", "TXT") for s in ("s00", "s01")} <= set(route53_dns.resolver.queries)

    # a clean stop releases the slot: the next node takes it and serves the stored certificate
    a_slot, a_serial = a.slot, a.certs.current.serial  # type: ignore[union-attr]
    await a.stop()
    assert await fleet.redis.exists(f"{fleet.key_prefix}slot:{a_slot}") == 0
    c = fleet.node("node-c")
    assert await c.start() == f"{a_slot}.{fleet.domain}"
    assert c.certs is not None and c.certs.current is not None and c.certs.current.serial == a_serial
    assert pebble.orders() == orders + 2  # reused: no order

    # node-b dies (its lease is never refreshed again, never released): the slot frees itself
    b_slot, b_serial = b.slot, b.certs.current.serial  # type: ignore[union-attr]
    await b.lease.stop()
    assert await fleet.redis.get(f"{fleet.key_prefix}slot:{b_slot}") == b"node-b"
    for _ in range(100):  # its 4 s TTL runs out
        if not await fleet.redis.exists(f"{fleet.key_prefix}slot:{b_slot}"):
            break
        await asyncio.sleep(0.1)
    d = fleet.node("node-d")
    assert await d.start() == f"{b_slot}.{fleet.domain}"
    assert d.certs.current.serial == b_serial  # type: ignore[union-attr]
    served = await handshake(d.ssl_context, f"abc.{b_slot}.{fleet.domain}", root)  # type: ignore[arg-type]
    assert format(served.serial_number, "x") == b_serial
    assert pebble.orders() == orders + 2
    for node in (c, d):
        await node.stop()


async def test_renewal_when_less_than_renew_before_remains(fleet: Fleet, pebble: Pebble) -> None:
    root = pebble.root_pem()
    now = [dt.datetime.now(dt.UTC)]
    node = fleet.node("node-r", clock=lambda: now[0])
    await node.start()
    assert node.certs is not None and node.ssl_context is not None
    first = node.certs.current
    assert first is not None
    assert (first.not_after - first.not_before) > 89 * DAY  # pebble issues for 90 days, as Let's Encrypt
    orders = pebble.orders()

    now[0] = first.not_after - 31 * DAY  # 31 days left: nothing to do
    assert not await node.check_certificate()
    assert pebble.orders() == orders

    now[0] = first.not_after - 29 * DAY  # under 30 days left: renewed, stored, served
    assert await node.check_certificate()
    assert pebble.orders() == orders + 1
    second = node.certs.current
    assert second is not None and second.serial != first.serial
    assert fleet.secret(f"cert/{node.slot}.{fleet.domain}")["serial"] == second.serial
    served = await handshake(node.ssl_context, f"x.{node.slot}.{fleet.domain}", root)
    assert format(served.serial_number, "x") == second.serial  # the same context, new handshakes
    await node.stop()

    # the next node on the slot serves the renewed one (the clock is real time again: the renewed
    # certificate was issued now, so under the advanced clock it would be due itself)
    nxt = fleet.node("node-s")
    await nxt.start()
    assert nxt.certs.current.serial == second.serial  # type: ignore[union-attr]
    assert pebble.orders() == orders + 1
    await nxt.stop()


async def test_per_slot_lock_prevents_two_concurrent_orders(fleet: Fleet, pebble: Pebble, route53: Any) -> None:
    """Two holders of one slot at once (a node whose lease expired while it renewed, and the slot's
    next holder) both find no certificate: one orders, the other waits on the lock and then finds
    the stored one."""
    settings = fleet.settings()
    store = SecretsManagerStore(fleet.store_prefix, client=fleet.secrets)

    def certs() -> SlotCertificates:
        dns = Route53Dns01(route53, fleet.zone_id, insync_poll_s=0.2)
        acme = AcmeDns01(settings.acme_directory, dns, ca_bundle=settings.acme_ca_bundle, timeout_s=60)
        return SlotCertificates(slot="s02", relay_domain=fleet.domain, store=store, acme=acme,
                                redis=fleet.redis, keys=SlotKeys(fleet.key_prefix), renew_before=30 * DAY)

    one, two = certs(), certs()
    orders = pebble.orders()
    got = await asyncio.gather(one.ensure(), two.ensure())
    assert pebble.orders() == orders + 1
    assert one.orders + two.orders == 1
    assert got[0].serial == got[1].serial
    assert await fleet.redis.exists(f"{fleet.key_prefix}slot:s02:certlock") == 0


# LocalStack 4.13.1's KMS cannot create a key under Python 3.11 (it passes bytes to uuid.uuid5, which
# takes them only from 3.12 on), and its S3 records an SSE-KMS key ARN without asking KMS: so the
# key is a fixed ARN here, and what is checked is that every object is written with SSE-KMS and it.
KEY_ARN = "arn:aws:kms:us-east-1:000000000000:key/11111111-2222-3333-4444-555555555555"


def test_s3_store_with_kms(localstack: Any) -> None:
    s3 = boto3.session.Session().client("s3")
    bucket = f"certs-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    store = S3Store(bucket, "polysocket/", KEY_ARN, client=s3)
    assert store.get("cert/s00.relay.test") is None
    store.put("cert/s00.relay.test", '{"x": 1}')
    store.put("cert/s00.relay.test", '{"x": 2}')
    assert store.get("cert/s00.relay.test") == '{"x": 2}'
    head = s3.head_object(Bucket=bucket, Key="polysocket/cert/s00.relay.test.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == KEY_ARN


def test_secrets_manager_store_creates_then_updates(localstack: Any) -> None:
    client = boto3.session.Session().client("secretsmanager")
    store = SecretsManagerStore(f"polysocket-test-{uuid.uuid4().hex[:8]}/", client=client)
    assert store.get("cert/s00.relay.test") is None
    store.put("cert/s00.relay.test", "one")
    store.put("cert/s00.relay.test", "two")
    assert store.get("cert/s00.relay.test") == "two"
    assert store.secret_id("acme-account/127.0.0.1:14000/dir").endswith("acme-account/127.0.0.1-14000/dir")
