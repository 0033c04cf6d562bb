"""Run a relay node under uvicorn, turning the first SIGTERM/SIGINT into a drain instead of a stop."""

from __future__ import annotations

import asyncio
import gc
import logging
from types import FrameType

import uvicorn

from .app import RelayNode
from .config import RelayConfig
from .http import RelayHTTPProtocol

log = logging.getLogger("polysocket.relay")


class DrainingServer(uvicorn.Server):
    """First signal: drain (keep serving polls so clients collect their close), then exit.

    A second SIGINT forces the exit, as in plain uvicorn.
    """

    def __init__(self, config: uvicorn.Config, node: RelayNode) -> None:
        super().__init__(config)
        self.node = node
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is None and self._loop is not None and not self.should_exit:
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self.node.agent.drain()
        finally:
            self.should_exit = True


# With hundreds of sockets the default young-generation threshold (700) runs a collection every few
# requests over thousands of live futures and connections: a third of the relay's CPU at 1,000
# sessions (bench/results/relay-ab.md).
GC_GEN0_THRESHOLD = 20_000


def run_relay(config: RelayConfig, host: str, port: int, log_level: str = "info",
              ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
    """Serve until drained. With a certificate the relay speaks HTTPS: pages served over HTTPS can
    only load scripts and make XHRs to HTTPS relays (mixed content is blocked)."""
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    node = RelayNode(config)
    uv_config = uvicorn.Config(
        node,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        http=RelayHTTPProtocol,  # the relay's own lean HTTP/1.1 on httptools (relay_node/http.py)
        lifespan="on",
        timeout_keep_alive=65,
        timeout_graceful_shutdown=5,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = DrainingServer(uv_config, node)
    server.run()
    log.info("relay %s stopped", config.node_id)

