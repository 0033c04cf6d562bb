"""Serve a relay node: its own lifecycle on asyncio, no ASGI server underneath.

The relay serves one protocol (``relay_node.edge.http1``) and needs four things from a server: listen
(optionally TLS), start and stop the node, drain on the first SIGTERM/SIGINT, and shut connections
down gracefully. That is done here with ``loop.create_server`` instead of through uvicorn, whose
protocol constructor, ``ServerState`` and ``Config.loaded_app`` are internals that change between
releases. Hosting this protocol under uvicorn anyway was measured (``bench/uvicorn_relay.py``,
``bench/results/uvicorn_host.md``): the same cost per request, 2.2x the idle CPU and +1.75 MiB per
relay; docs/deploy.md, "Why the relay runs its own server, not uvicorn's".

The server hosts an already built node through ``HostedNode`` (``relay_node.node`` builds one and
calls ``serve``), so it knows neither the node's parts nor its settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from collections.abc import Callable, Sequence
from typing import Protocol

from polysocket_core.redis_client import RedisUnusable

from .compiled import build_summary
from .edge.http1 import AnswerFn, Connections, Headers, Limits, RelayHTTPProtocol, register_constant_headers

log = logging.getLogger("polysocket.relay")

# With hundreds of sockets the default young-generation threshold (700) runs a collection every few
# requests over thousands of live futures and connections: a third of the relay's CPU at 1,000
# sessions (bench/results/relay-ab.md).
GC_GEN0_THRESHOLD = 20_000
KEEP_ALIVE_S = 65.0  # above the 60 s idle timeout of common load balancers, so they close first
GRACEFUL_SHUTDOWN_S = 5.0  # answers in progress (long polls) get this long once the relay stops
BACKLOG = 2048
STARTUP_FAILURE = 3  # exit status when the node cannot start (as uvicorn's)


def ssl_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """A server context with the library's defaults (TLS 1.2+), for HTTPS relays."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


class HostedNode(Protocol):
    """What the server needs of the node it serves (``relay_node.node.RelayNode`` is one)."""

    request_drain: Callable[[], None] | None  # the server sets it: drain as on SIGTERM

    @property
    def node_id(self) -> str: ...

    @property
    def max_body(self) -> int:
        """The largest request body the node's endpoints accept, bytes."""

    @property
    def answer(self) -> AnswerFn:
        """The endpoints' seam, served by the HTTP/1.1 protocol."""

    @property
    def constant_headers(self) -> Sequence[Headers]:
        """Header lists the node answers with again and again (formatted once by the protocol)."""

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """A certificate the node obtained while starting (a slot's), if any."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def drain(self) -> None:
        """Refuse new sockets, serve out the grace period, close the rest, deregister."""


class RelayServer:
    """The node, its listening socket and its connections; ``serve`` runs until stopped or drained."""

    def __init__(self, node: HostedNode, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None,
                 limits: Limits | None = None) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.ssl_ctx = ssl_ctx
        self.limits = limits or Limits(max_body_bytes=node.max_body, keep_alive_s=KEEP_ALIVE_S)
        self.connections = Connections()
        self.stopping = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        node.request_drain = self.on_signal
        register_constant_headers(*node.constant_headers)

    def protocol(self) -> RelayHTTPProtocol:
        return RelayHTTPProtocol(self.node.answer, self.limits, self.connections)

    def on_signal(self) -> None:
        """First signal: drain (keep serving polls so clients collect their close), then stop.
        A second one stops now (answers in progress still get the graceful period)."""
        if self._drain_task is None and not self.stopping.is_set():
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        else:
            self.stopping.set()

    async def _drain(self) -> None:
        try:
            await self.node.drain()
        finally:
            self.stopping.set()

    async def serve(self, install_signals: bool = True) -> int:
        """Start the node, listen, serve until stopped; the exit status."""
        loop = asyncio.get_running_loop()
        try:
            await self.node.start()
        except RedisUnusable as exc:  # a configuration to fix, not a bug: its line, no traceback
            log.error("relay startup failed: %s", exc)
            await self.node.stop()
            return STARTUP_FAILURE
        except Exception:
            log.exception("relay startup failed")
            await self.node.stop()
            return STARTUP_FAILURE
        if self.ssl_ctx is None:  # a slot certificate the node obtained while starting
            self.ssl_ctx = self.node.ssl_context
        try:
            server = await loop.create_server(self.protocol, self.host, self.port, ssl=self.ssl_ctx,
                                              backlog=BACKLOG, reuse_address=True)
        except OSError as exc:
            log.error("relay cannot listen on %s:%d: %s", self.host, self.port, exc)
            await self.node.stop()
            return 1
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.on_signal)
        scheme = "https" if self.ssl_ctx else "http"
        log.info("relay %s serving on %s://%s:%d, %s", self.node.node_id, scheme, self.host, self.port,
                 build_summary())
        try:
            await self.stopping.wait()
        finally:
            await self._shutdown(server)
        return 0

    async def _shutdown(self, server: asyncio.Server) -> None:
        server.close()  # stop accepting
        self.connections.shutdown()
        if not await self.connections.wait_closed(GRACEFUL_SHUTDOWN_S):
            self.connections.abort()
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task
        await self.node.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform: plain asyncio works, slower
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve(node: HostedNode, host: str, port: int, ssl_ctx: ssl.SSLContext | None) -> int:
    """Serve ``node`` on its own event loop (uvloop where built) until stopped; the exit status."""
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])  # perf: gc-gen0
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(RelayServer(node, host, port, ssl_ctx).serve())
