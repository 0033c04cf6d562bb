"""The relay's own protocol hosted by uvicorn's server, instead of ``relay_node.server`` (issue 16, a trial).

uvicorn serves any ``asyncio.Protocol`` class given as ``Config(http=cls)``: it builds one per
connection as ``cls(config=, server_state=, app_state=, _loop=)`` (uvicorn 0.55). Here that class
is ``RelayHTTPProtocol`` bound to the node's ``answer`` and ``Limits``; its ``Connections`` registry
is a view over uvicorn's own ``server_state.connections`` / ``.tasks``, so uvicorn's graceful
shutdown sees, shuts down and waits for the relay's connections as it would for its own.

What maps onto what (``relay_node.server.RelayServer`` -> here):

* start: ``node.start()`` runs before uvicorn is configured (as today, before listening), so a slot
  certificate the node obtains while starting is the TLS context uvicorn listens with
  (``Config(ssl_context_factory=)``). uvicorn's ASGI app and lifespan are unused (``lifespan="off"``):
  the protocol never calls an app.
* drain: uvicorn turns SIGTERM/SIGINT into ``should_exit`` at once (``Server.handle_exit``), which
  would stop accepting and shut connections while clients still have to collect their 1001 close.
  ``handle_exit`` is overridden to do what ``RelayServer.on_signal`` does: the first signal (or the
  node's ``request_drain``) starts ``agent.drain()`` and sets ``should_exit`` when it ends; a later
  one sets ``should_exit`` now. Neither is recorded for uvicorn to re-raise after serving, so the
  process exits 0 as today's does (uvicorn's own handler would re-raise the signal: exit 143).
* stop: uvicorn closes the listener, calls ``shutdown()`` on each connection, waits up to
  ``timeout_graceful_shutdown`` for connections and tasks, then cancels the tasks; here the
  connections left (a long poll whose task was cancelled) are aborted and the node stops. By then
  uvicorn has put back the signal handlers it found (the defaults): a SIGTERM during the node's stop
  kills the process, where today's server takes it as "stop now" and still finishes the stop.
* listen failure: uvicorn logs it and raises ``SystemExit(3)``; the node is stopped, status 3.

Bench only: ``polysocket relay`` runs ``relay_node.server``. ``bench/uvicorn_host.py`` measures both, and
what it found (a fixed cost, nothing gained) is why this is not in the product: docs/deploy.md,
"Why the relay runs its own server, not uvicorn's".
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import ssl
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.server import ServerState

from relay_node.edge.http1 import AnswerFn, Connections, Limits, RelayHTTPProtocol, register_constant_headers
from relay_node.node import RelayNode
from relay_node.server import (
    BACKLOG,
    GC_GEN0_THRESHOLD,
    GRACEFUL_SHUTDOWN_S,
    KEEP_ALIVE_S,
    STARTUP_FAILURE,
    HostedNode,
    _loop_factory,
    ssl_context,
)
from relay_node.settings import RelayConfig

log = logging.getLogger("polysocket.relay")


async def no_asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's Config requires an app; the relay's protocol answers through ``answer`` and never calls it."""
    raise RuntimeError("the relay's protocol does not run an ASGI app")


def hosted_protocol(answer: AnswerFn, limits: Limits, connections: Connections) -> type[asyncio.Protocol]:
    """What uvicorn calls to build a protocol (``Config(http=...)``, called with uvicorn's keywords): a
    ``RelayHTTPProtocol`` bound to the node. A function, not a subclass: the relay image compiles
    ``RelayHTTPProtocol`` with mypyc (``relay_node/compiled.py``), and a compiled class takes no
    interpreted subclass."""

    def build(config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any] | None = None,
              _loop: asyncio.AbstractEventLoop | None = None) -> RelayHTTPProtocol:
        return RelayHTTPProtocol(answer, limits, connections, _loop)

    return cast(type[asyncio.Protocol], build)  # uvicorn only calls it, as it would a class


def share_state(connections: Connections, state: ServerState) -> None:
    """Make the relay's registry a view of uvicorn's: one set of connections and answer tasks,
    which uvicorn's shutdown walks (``shutdown()``, then waits for both to empty)."""
    connections.open = cast(set[RelayHTTPProtocol], state.connections)
    connections.tasks = state.tasks


class DrainingUvicornServer(uvicorn.Server):
    """uvicorn's server for one relay node: first signal drains, a later one stops (as RelayServer)."""

    def __init__(self, node: HostedNode, host: str, port: int, ssl_ctx: ssl.SSLContext | None,
                 limits: Limits) -> None:
        self.node = node
        self.connections = Connections()
        config = uvicorn.Config(
            no_asgi_app, host=host, port=port,
            http=hosted_protocol(node.answer, limits, self.connections),
            ws="none", lifespan="off", interface="asgi3",
            log_config=None,  # the relay's logging stays as configured (uvicorn's default replaces it)
            access_log=False, proxy_headers=False, server_header=False, date_header=False,
            backlog=BACKLOG, timeout_graceful_shutdown=math.ceil(GRACEFUL_SHUTDOWN_S),
            ssl_context_factory=None if ssl_ctx is None else (lambda _config, _default: ssl_ctx),
        )
        super().__init__(config)
        share_state(self.connections, self.server_state)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        node.request_drain = self.request_stop

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Runs in the signal handler: hand over to the loop (not recorded, so not re-raised)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request_stop)

    def request_stop(self) -> None:
        """First call: drain (keep serving polls so clients collect their close), then stop. A
        later one stops now (answers in progress still get the graceful period)."""
        if self._drain_task is None and not self.should_exit:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        else:
            self.should_exit = True

    async def _drain(self) -> None:
        try:
            await self.node.drain()
        finally:
            self.should_exit = True

    async def finish(self) -> None:
        """After uvicorn's shutdown: drop what outlived the graceful period, stop the drain and the node."""
        self.connections.abort()
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task
        await self.node.stop()


async def serve_under_uvicorn(node: HostedNode, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None,
                              limits: Limits | None = None,
                              on_server: Callable[[DrainingUvicornServer], None] | None = None) -> int:
    """Start the node, serve under uvicorn until drained or stopped; the exit status (as
    ``RelayServer.serve``). ``on_server`` sees the server once it exists (tests drive its signals)."""
    register_constant_headers(*node.constant_headers)
    try:
        await node.start()
    except Exception:
        log.exception("relay startup failed")
        await node.stop()
        return STARTUP_FAILURE
    limits = limits or Limits(max_body_bytes=node.max_body, keep_alive_s=KEEP_ALIVE_S)
    server = DrainingUvicornServer(node, host, port, ssl_ctx or node.ssl_context, limits)
    if on_server is not None:
        on_server(server)
    status = 0
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn's answer to a port it cannot listen on (it logged why)
        status = exc.code if isinstance(exc.code, int) else STARTUP_FAILURE
    finally:
        await server.finish()
    return status


def run_relay_under_uvicorn(config: RelayConfig) -> int:
    """``relay_node.server.run_relay`` with uvicorn's server: same GC threshold, loop and TLS."""
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    ssl_ctx = ssl_context(config.ssl_certfile, config.ssl_keyfile) if config.ssl_certfile else None
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        status = runner.run(serve_under_uvicorn(RelayNode(config), config.host, config.port, ssl_ctx))
    log.info("relay %s stopped", config.node_id)
    return status
