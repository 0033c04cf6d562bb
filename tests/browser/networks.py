"""The networks of the matrix (issue 17): what stands between the browser and polysocket, each a
real process started on loopback for a test module and stopped by its PID, and what it lets through.

A network is started once per engine's run of the matrix and shared by its tests; it yields the
``host:port`` the browser uses as its proxy (every request, loopback included), or None.
Each refuses destinations other than loopback names, so a browser's background requests go nowhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.proxies import LoopbackParent, ProxyPolicy, RunningProxy, start_nginx, start_privoxy, start_squid

Start = Callable[[Path], contextlib.AbstractContextManager[str | None]]  # workdir -> the browser's proxy


@dataclass(frozen=True)
class Network:
    """``native``: a ``ws://`` gets through; ``streams``: a relay's stream answer arrives as it is
    sent (not held back whole)."""

    name: str
    what: str  # one line for the table
    native: bool
    streams: bool
    start: Start

    @property
    def receiver(self) -> str:
        """How a fallback socket ends up receiving on this network."""
        return "stream" if self.streams else "poll"


@contextlib.contextmanager
def _direct(workdir: Path) -> Iterator[str | None]:
    yield None


@contextlib.contextmanager
def _behind(proxy: RunningProxy, parent: LoopbackParent | None = None) -> Iterator[str | None]:
    try:
        yield f"127.0.0.1:{proxy.port}"
    finally:
        proxy.stop()
        if parent is not None:
            parent.close()


def _forward(start: Callable[[Path, ProxyPolicy], RunningProxy]) -> Start:
    """A forward proxy chained to a ``LoopbackParent`` (it resolves the relays' ``*.localhost`` names)."""

    @contextlib.contextmanager
    def run(workdir: Path) -> Iterator[str | None]:
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
def _nginx(workdir: Path) -> Iterator[str | None]:
    with _behind(start_nginx(workdir)) as address:
        yield address


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
    )
}
