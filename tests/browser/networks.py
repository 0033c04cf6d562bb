"""The networks of the matrix (issue 17): what stands between the browser and polysocket, each a
real process started on loopback for a test module and stopped by its PID, and what it lets through.

A network is started once per engine's run of the matrix and shared by its tests; it yields how
the browser reaches it (``Reach``): the ``host:port`` it uses as its proxy (every request, loopback
included), or None, and the CA keys it must trust there. Each refuses destinations other than
loopback names, so a browser's background requests go nowhere. A network with ``tls`` is for a site
on HTTPS (tls.py's ``TlsSite``), whose CA it is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from https_site import TestCA

from tests.support.proxies import (
    Interception,
    LoopbackDNS,
    LoopbackParent,
    ProxyPolicy,
    RunningProxy,
    start_intercepting_squid,
    start_nginx,
    start_privoxy,
    start_squid,
)


@dataclass(frozen=True)
class Reach:
    """How the browser is set up for a network: its proxy (``host:port``, or None) and the SPKI
    hashes of the CAs it trusts there (an intercepting proxy's)."""

    proxy: str | None
    trusted_keys: tuple[str, ...] = ()


# (workdir, the site's CA on a TLS network, else None) -> how the browser reaches the network
Start = Callable[[Path, TestCA | None], contextlib.AbstractContextManager[Reach]]


@dataclass(frozen=True)
class Network:
    """``native``: a ``ws://`` gets through; ``streams``: a relay's stream answer arrives as it is
    sent (not held back whole)."""

    name: str
    what: str  # one line for the table
    native: bool
    streams: bool
    start: Start
    tls: bool = False  # the site (page, router, relays, target) on HTTPS

    @property
    def receiver(self) -> str:
        """How a fallback socket ends up receiving on this network."""
        return "stream" if self.streams else "poll"


@contextlib.contextmanager
def _direct(workdir: Path, site_ca: TestCA | None) -> Iterator[Reach]:
    yield Reach(None)


@contextlib.contextmanager
def _behind(proxy: RunningProxy, parent: LoopbackParent | None = None) -> Iterator[Reach]:
    try:
        yield Reach(f"127.0.0.1:{proxy.port}")
    finally:
        proxy.stop()
        if parent is not None:
            parent.close()


def _forward(start: Callable[[Path, ProxyPolicy], RunningProxy]) -> Start:
    """A forward proxy chained to a ``LoopbackParent`` (it resolves the relays' ``*.localhost`` names)."""

    @contextlib.contextmanager
    def run(workdir: Path, site_ca: TestCA | None) -> Iterator[Reach]:
        parent = LoopbackParent()
        try:
            proxy = start(workdir, ProxyPolicy(parent_port=parent.port))
        except BaseException:
            parent.close()
            raise
        with _behind(proxy, parent) as address:
            yield address

    return run


@contextlib.contextmanager
def _nginx(workdir: Path, site_ca: TestCA | None) -> Iterator[Reach]:
    with _behind(start_nginx(workdir)) as reach:
        yield reach


@contextlib.contextmanager
def _intercepting(workdir: Path, site_ca: TestCA | None) -> Iterator[Reach]:
    """squid with ssl_bump and a CA of its own, the one the browser trusts (not the site's: a page
    that loads at all was decrypted by the proxy); it trusts the site's CA, and resolves the site's
    names with a ``LoopbackDNS``."""
    if site_ca is None:
        raise ValueError("an intercepting proxy is for a site on TLS: give its CA")
    proxy_ca = TestCA(workdir, "proxy")
    dns = LoopbackDNS()
    try:
        proxy = start_intercepting_squid(workdir, Interception(proxy_ca.cert_pem, proxy_ca.key_pem, site_ca.cert_pem,
                                                               dns.address))
        with _behind(proxy) as reach:
            yield Reach(reach.proxy, (proxy_ca.spki_hash,))
    finally:
        dns.close()


NETWORKS: dict[str, Network] = {
    n.name: n
    for n in (
        Network("direct", "no proxy", native=True, streams=True, start=_direct),
        Network("squid", "squid, CONNECT only to 443 (refuses the upgrade)", native=False, streams=True,
                start=_forward(start_squid)),
        Network("privoxy", "privoxy, Debian's action files, CONNECT only to 443 (buffers streams)", native=False,
                streams=False, start=_forward(start_privoxy)),
        # The relay's streams say X-Accel-Buffering: no, which nginx honours: they pass.
        Network("nginx", "nginx, proxy_buffering on, no WebSocket configuration", native=False, streams=True,
                start=_nginx),
        Network("squid-tls", "squid with ssl_bump and a CA the browser trusts; page and relays on HTTPS", native=False,
                streams=True, start=_intercepting, tls=True),
    )
}
