"""A relay node's slot and certificate, as one object the node starts first and stops last.

``start()``: lease a slot (its name becomes the node's fqdn), then, with certificates on, get the
slot's certificate (stored, or ordered) and build the TLS context the relay listens with; while the
node runs, keep the lease and look at the certificate's remaining time every check interval
(a renewed certificate is loaded into the same context). ``stop()``: release the slot, after the
node has deregistered and withdrawn its DNS records, so the next holder's records are never
touched by this node's clean-up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable
from typing import Any

from .certs import AcmeDns01, Route53Dns01, SlotCertificates, TlsFiles, utcnow
from .certstore import CertStore, open_store
from .leases import SlotLease
from .route53 import route53_client
from .settings import CloudSettings
from .slots import SlotKeys, next_check, slot_fqdn, slot_names

log = logging.getLogger("polysocket.relay.aws")


class SlotNode:
    def __init__(self, settings: CloudSettings, redis: Any, *, key_prefix: str, node_id: str,
                 on_lost: Callable[[], None] | None = None, store: CertStore | None = None,
                 route53: Any = None, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = SlotKeys(key_prefix)
        self.node_id = node_id
        self.on_lost = on_lost
        self.lease = SlotLease(redis, self.keys, slot_names(settings.slot_count), node_id,
                               settings.slot_lease_ttl_s, on_lost=self._lost)
        self._store = store
        self._route53 = route53
        self.clock = clock
        self.slot: str | None = None
        self.fqdn: str | None = None
        self.certs: SlotCertificates | None = None
        self.tls: TlsFiles | None = None
        self._renewer: asyncio.Task[None] | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return self.tls.context if self.tls is not None else None

    @property
    def lost(self) -> bool:
        return self.lease.lost

    def _lost(self) -> None:
        if self.on_lost is not None:
            self.on_lost()

    def _certificates(self, slot: str) -> SlotCertificates:
        s = self.settings
        store = self._store or open_store(s.cert_store, prefix=s.cert_prefix, bucket=s.cert_bucket,
                                          kms_key_id=s.kms_key_id)
        dns = Route53Dns01(self._route53 or route53_client(), s.zone_id, ttl=s.record_ttl_s,
                           insync_timeout_s=s.insync_timeout_s, insync_poll_s=s.insync_poll_s)
        acme = AcmeDns01(s.acme_directory, dns, email=s.acme_email, ca_bundle=s.acme_ca_bundle,
                         timeout_s=s.acme_timeout_s)
        return SlotCertificates(slot=slot, relay_domain=s.relay_domain, store=store, acme=acme, redis=self.redis,
                                keys=self.keys, renew_before=dt.timedelta(seconds=s.renew_before_s),
                                clock=self.clock)

    async def start(self) -> str:
        """Lease a slot and, with certificates on, have one to serve; returns the node's fqdn."""
        self.slot = await self.lease.acquire()
        self.lease.start()
        self.fqdn = slot_fqdn(self.slot, self.settings.relay_domain)
        if self.settings.certs_enabled:
            self.certs = self._certificates(self.slot)
            cert = await self.certs.ensure()
            self.tls = TlsFiles()
            self.tls.load(cert)
            log.info("slot %s: serving certificate %s until %s", self.slot, cert.serial, cert.not_after.isoformat())
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop(), name="slot-cert-renewal")
        return self.fqdn

    async def check_certificate(self) -> bool:
        """Renew when due (or pick up one another node stored); True when a new one is served."""
        if self.certs is None or self.tls is None:
            return False
        cert = await self.certs.renew_if_due()
        if cert is None:
            return False
        self.tls.load(cert)
        log.info("slot %s: now serving certificate %s until %s", self.slot, cert.serial, cert.not_after.isoformat())
        return True

    async def _renew_loop(self) -> None:
        interval = dt.timedelta(seconds=self.settings.cert_check_interval_s)
        renew_before = dt.timedelta(seconds=self.settings.renew_before_s)
        while True:
            current = self.certs.current if self.certs else None
            wait = next_check(current.facts, self.clock(), renew_before, interval) if current else interval
            await asyncio.sleep(wait.total_seconds())
            try:
                await self.check_certificate()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep serving the current one; try again next time
                log.warning("slot %s: certificate check failed: %s", self.slot, e)

    async def stop(self) -> None:
        """Stop renewing, give the slot back (unless it was lost), remove the key files."""
        task, self._renewer = self._renewer, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self.lease.release()
        finally:
            if self.tls is not None:
                self.tls.remove()
                self.tls = None
