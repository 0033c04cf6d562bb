"""Slot certificates: obtained by ACME DNS-01 through Route 53, stored encrypted, reused, renewed.

The ACME protocol is the ``acme`` package's (certbot's library); this module only drives it:

1. the fleet's ACME account (one per directory) is loaded from the store, or created once under a
   Redis lock and stored;
2. an order for ``{slot}.{domain}`` and ``*.{slot}.{domain}`` with a fresh RSA-2048 key (RSA, not
   ECDSA: the old browsers polysocket exists for include some without ECDSA support);
3. for each pending authorization its DNS-01 value goes into one TXT record set,
   ``_acme-challenge.{slot}.{domain}`` (both names validate there), UPSERTed into the hosted zone;
   once Route 53 says INSYNC the challenges are answered, the order is polled and finalized, and the
   TXT record is deleted again;
4. the chain and key are stored (``relay_node.control.aws.certstore``) as one JSON entry.

:class:`SlotCertificates` decides (``slots.cert_action``) whether a stored certificate is served as
is, served while a successor is ordered, or must be ordered first, and orders only under the slot's
Redis lock, re-reading the store once it holds it: a node that waited for another node's order
finds the new certificate and orders nothing.

Blocking parts (ACME over ``requests``, boto3) run in worker threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from acme import challenges, crypto_util, errors, messages
from acme import client as acme_client
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.jwk import JWK, JWKRSA

from .certstore import CertStore
from .leases import RedisLock
from .route53 import Client, wait_insync
from .slots import CertAction, CertFacts, SlotKeys, cert_action, cert_names

log = logging.getLogger("polysocket.relay.aws")

CERT_FORMAT = "polysocket-cert/1"
ACCOUNT_FORMAT = "polysocket-acme-account/1"
USER_AGENT = "polysocket-relay (acme-python)"
KEY_BITS = 2048


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def cert_entry(host: str) -> str:
    """The store entry of the certificate of ``host`` (``s03.relay.example.com``)."""
    return f"cert/{host}"


def account_entry(directory_url: str) -> str:
    return f"acme-account/{directory_url.split('://', 1)[-1].rstrip('/')}"


@dataclass(frozen=True, slots=True)
class SlotCert:
    """A certificate chain (leaf first) and its private key, as PEM, with the leaf's facts."""

    fullchain_pem: str
    key_pem: str
    names: frozenset[str]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: str

    @classmethod
    def from_pem(cls, fullchain_pem: str, key_pem: str) -> SlotCert:
        leaf = x509.load_pem_x509_certificate(fullchain_pem.encode())
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = frozenset(n.lower() for n in san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = frozenset()
        serialization.load_pem_private_key(key_pem.encode(), password=None)  # fail here, not at serving
        return cls(fullchain_pem, key_pem, names, leaf.not_valid_before_utc, leaf.not_valid_after_utc,
                   format(leaf.serial_number, "x"))

    @property
    def facts(self) -> CertFacts:
        return CertFacts(self.names, self.not_before, self.not_after)

    def to_json(self, **extra: str) -> str:
        return json.dumps({"format": CERT_FORMAT, "names": sorted(self.names), "serial": self.serial,
                           "not_after": self.not_after.isoformat(), "fullchain_pem": self.fullchain_pem,
                           "key_pem": self.key_pem, **extra})

    @classmethod
    def from_json(cls, text: str) -> SlotCert:
        """The stored entry; its facts are read from the certificate itself, not from the JSON."""
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != CERT_FORMAT:
            raise ValueError("not a polysocket certificate entry")
        return cls.from_pem(str(doc["fullchain_pem"]), str(doc["key_pem"]))


@dataclass(frozen=True, slots=True)
class AcmeAccount:
    key: JWKRSA
    uri: str

    def to_json(self, directory_url: str, email: str) -> str:
        return json.dumps({"format": ACCOUNT_FORMAT, "directory": directory_url, "uri": self.uri,
                           "email": email, "key": self.key.to_json()})

    @classmethod
    def from_json(cls, text: str) -> AcmeAccount:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != ACCOUNT_FORMAT:
            raise ValueError("not a polysocket ACME account entry")
        key = JWK.from_json(doc["key"])
        if not isinstance(key, JWKRSA):
            raise ValueError("the stored ACME account key is not RSA")
        return cls(key, str(doc["uri"]))


def new_account_key() -> JWKRSA:
    return JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS))


class Route53Dns01:
    """DNS-01 TXT records in one hosted zone: UPSERT and wait until INSYNC, then DELETE."""

    def __init__(self, client: Client, zone_id: str, *, ttl: int = 60, insync_timeout_s: float = 300.0,
                 insync_poll_s: float = 2.0) -> None:
        self.client = client
        self.zone_id = zone_id
        self.ttl = ttl
        self.insync_timeout_s = insync_timeout_s
        self.insync_poll_s = insync_poll_s

    def _changes(self, action: str, records: dict[str, list[str]]) -> list[dict[str, Any]]:
        return [{"Action": action, "ResourceRecordSet": {
            "Name": name, "Type": "TXT", "TTL": self.ttl,
            "ResourceRecords": [{"Value": f'"{v}"'} for v in sorted(set(values))]}}
            for name, values in sorted(records.items())]

    def publish(self, records: dict[str, list[str]]) -> None:
        answer = self.client.change_resource_record_sets(HostedZoneId=self.zone_id, ChangeBatch={
            "Comment": "polysocket ACME DNS-01", "Changes": self._changes("UPSERT", records)})
        wait_insync(self.client, answer["ChangeInfo"]["Id"], timeout_s=self.insync_timeout_s,
                    poll_s=self.insync_poll_s)
        log.info("acme: TXT %s published", ", ".join(records))

    def withdraw(self, records: dict[str, list[str]]) -> None:
        try:
            self.client.change_resource_record_sets(HostedZoneId=self.zone_id, ChangeBatch={
                "Comment": "polysocket ACME DNS-01 done", "Changes": self._changes("DELETE", records)})
        except ClientError as e:  # already gone or changed: nothing of ours to delete
            if e.response.get("Error", {}).get("Code") != "InvalidChangeBatch":
                raise


class AcmeDns01:
    """Orders certificates from one ACME directory, proving control with :class:`Route53Dns01`.

    ``ca_bundle``: verify the directory's HTTPS with this PEM file instead of the system's roots (a
    private ACME server, or pebble in the tests). Blocking.
    """

    def __init__(self, directory_url: str, dns: Route53Dns01, *, email: str = "", ca_bundle: str = "",
                 timeout_s: float = 600.0) -> None:
        self.directory_url = directory_url
        self.dns = dns
        self.email = email
        self.ca_bundle = ca_bundle
        self.timeout_s = timeout_s

    def _client(self, key: JWKRSA, account_uri: str | None) -> acme_client.ClientV2:
        net = acme_client.ClientNetwork(key, user_agent=USER_AGENT)
        if self.ca_bundle:
            # requests takes a CA bundle path where acme's annotation says bool
            net.verify_ssl = cast(bool, self.ca_bundle)
        if account_uri is not None:
            net.account = messages.RegistrationResource(body=messages.Registration(), uri=account_uri)
        return acme_client.ClientV2(acme_client.ClientV2.get_directory(self.directory_url, net), net)

    def register(self, key: JWKRSA) -> AcmeAccount:
        """A new account for ``key`` (terms of service agreed), or the existing one of that key."""
        client = self._client(key, None)
        reg = messages.NewRegistration.from_data(email=self.email or None, terms_of_service_agreed=True)
        try:
            uri = client.new_account(reg).uri
        except errors.ConflictError as e:
            uri = e.location
        log.info("acme: account %s at %s", uri, self.directory_url)
        return AcmeAccount(key, uri)

    def order(self, account: AcmeAccount, names: Sequence[str], key_pem: str) -> tuple[str, str]:
        """One order for ``names`` signed with ``key_pem``; (full chain PEM, order URL)."""
        client = self._client(account.key, account.uri)
        order = client.new_order(crypto_util.make_csr(key_pem.encode(), list(names)))
        records: dict[str, list[str]] = {}
        pending: list[messages.ChallengeBody] = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # the CA reused an authorization we proved before
            dns01 = [c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01)]
            if not dns01:
                raise errors.Error(f"no dns-01 challenge offered for {authz.body.identifier.value}")
            chall = cast(challenges.DNS01, dns01[0].chall)
            record = chall.validation_domain_name(authz.body.identifier.value)
            records.setdefault(record, []).append(chall.validation(account.key))
            pending.append(dns01[0])
        deadline = dt.datetime.now() + dt.timedelta(seconds=self.timeout_s)  # acme compares naive local times
        if records:
            self.dns.publish(records)
        try:
            for challb in pending:
                client.answer_challenge(challb, challb.chall.response(account.key))
            done = client.poll_and_finalize(order, deadline)
        finally:
            if records:
                self.dns.withdraw(records)
        log.info("acme: order %s for %s valid", order.uri, ", ".join(names))
        return str(done.fullchain_pem), str(order.uri)


class SlotCertificates:
    """The certificate of one slot: served from the store when it can be, ordered when it must be.

    ``orders`` counts the orders this object placed. ``clock`` returns an aware UTC datetime.
    """

    def __init__(self, *, slot: str, relay_domain: str, store: CertStore, acme: AcmeDns01, redis: Any,
                 keys: SlotKeys, renew_before: dt.timedelta, lock_ttl_s: float = 30.0,
                 lock_wait_s: float | None = None, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.slot = slot
        self.names = cert_names(slot, relay_domain)
        self.store = store
        self.acme = acme
        self.redis = redis
        self.keys = keys
        self.renew_before = renew_before
        self.lock_ttl_s = lock_ttl_s
        # a node that waits for another's order must outwait a whole order (DNS wait + ACME)
        self.lock_wait_s = lock_wait_s if lock_wait_s is not None else (
            acme.timeout_s + acme.dns.insync_timeout_s + 60.0)
        self.clock = clock
        self.orders = 0
        self.current: SlotCert | None = None

    @property
    def entry(self) -> str:
        return cert_entry(self.names[0])

    async def load(self) -> SlotCert | None:
        text = await asyncio.to_thread(self.store.get, self.entry)
        if text is None:
            return None
        try:
            return SlotCert.from_json(text)
        except (ValueError, KeyError, TypeError) as e:  # unreadable: replaced by the next order
            log.warning("certificate store: %s is unusable (%s); ordering a new one", self.entry, e)
            return None

    def action(self, cert: SlotCert | None) -> CertAction:
        return cert_action(cert.facts if cert else None, self.names, self.clock(), self.renew_before)

    async def ensure(self) -> SlotCert:
        """A certificate to serve now. Orders one (under the slot's lock) when the store has none
        that is usable, or when the stored one is due for renewal; in that case a failed order is
        logged and the stored certificate served."""
        cert = await self.load()
        if self.action(cert) is CertAction.USE:
            assert cert is not None
            self.current = cert
            return cert
        try:
            cert = await self._order_locked()
        except Exception as e:
            if cert is None or self.action(cert) is not CertAction.RENEW:
                raise
            log.warning("acme: renewing %s failed (%s); serving the current certificate until %s",
                        self.names[0], e, cert.not_after.isoformat())
        self.current = cert
        return cert

    async def renew_if_due(self) -> SlotCert | None:
        """For a serving node: the new certificate when one was stored since (by this node or
        another), None when the current one stays."""
        before = self.current
        if before is not None and self.action(before) is CertAction.USE:
            return None
        cert = await self.ensure()
        return None if before is not None and cert.serial == before.serial else cert

    async def _order_locked(self) -> SlotCert:
        lock = RedisLock(self.redis, self.keys.cert_lock(self.slot), ttl_s=self.lock_ttl_s)
        async with lock.held(self.lock_wait_s):
            # while we waited another node may have stored a fresh one: then there is nothing to do
            cert = await self.load()
            if self.action(cert) is CertAction.USE:
                assert cert is not None
                log.info("acme: %s was renewed by another node meanwhile", self.names[0])
                return cert
            account = await self._account()
            key_pem = new_key_pem()
            self.orders += 1
            fullchain, order_url = await asyncio.to_thread(self.acme.order, account, self.names, key_pem)
            cert = SlotCert.from_pem(fullchain, key_pem)
            text = cert.to_json(order=order_url, directory=self.acme.directory_url, issued_at=self.clock().isoformat())
            await asyncio.to_thread(self.store.put, self.entry, text)
            log.info("certificate %s (serial %s, until %s) stored", self.names[0], cert.serial,
                     cert.not_after.isoformat())
            return cert

    async def _account(self) -> AcmeAccount:
        name = account_entry(self.acme.directory_url)
        text = await asyncio.to_thread(self.store.get, name)
        if text is not None:
            return AcmeAccount.from_json(text)
        async with RedisLock(self.redis, self.keys.account_lock, ttl_s=self.lock_ttl_s).held(self.lock_wait_s):
            text = await asyncio.to_thread(self.store.get, name)
            if text is not None:
                return AcmeAccount.from_json(text)
            account = await asyncio.to_thread(self.acme.register, new_account_key())
            await asyncio.to_thread(self.store.put, name, account.to_json(self.acme.directory_url, self.acme.email))
            return account


class TlsFiles:
    """The served certificate as files (``ssl`` loads chains and keys only from files), in a private
    directory removed on :meth:`remove`, and the server context that serves them.

    :meth:`reload` loads a new certificate into the same context: connections made from then on get
    it, open ones keep theirs, nothing restarts.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="polysocket-tls-"))  # mode 0700
        self.context: ssl.SSLContext | None = None
        self._generation = 0

    def _write(self, cert: SlotCert) -> tuple[Path, Path]:
        self._generation += 1
        paths = self.dir / f"chain{self._generation}.pem", self.dir / f"key{self._generation}.pem"
        for path, text in zip(paths, (cert.fullchain_pem, cert.key_pem), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        return paths

    def _prune(self, keep: Iterable[Path]) -> None:
        for path in set(self.dir.iterdir()) - set(keep):
            path.unlink(missing_ok=True)

    def load(self, cert: SlotCert) -> ssl.SSLContext:
        chain, key = self._write(cert)
        if self.context is None:
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(chain, key)
        self._prune((chain, key))
        return self.context

    def remove(self) -> None:
        self._prune(())
        self.dir.rmdir()
