"""A relay node as one ASGI application: lifespan starts the control-plane agent, HTTP goes to RelayHTTP."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from .agent import NodeAgent
from .config import RelayConfig
from .http import Receive, RelayHTTP, Scope, Send
from .metrics import RelayMetrics
from .table import SocketTable

log = logging.getLogger("polysocket.relay")


class RelayNode:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.metrics = RelayMetrics()
        self.table = SocketTable(config, self.metrics)
        # A read timeout far above any pause the node may suffer: a node that wakes up must still read
        # the establish request its BLPOP was handed (else the request, and its token reservation,
        # would be lost with the connection). Keepalive finds dead peers instead.
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            config.redis_url, socket_connect_timeout=5, socket_timeout=60, socket_keepalive=True,
            health_check_interval=30,
        )
        self.agent = NodeAgent(config, self.table, self.redis)
        self.http = RelayHTTP(self.table, self.metrics, self.agent)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                try:
                    await self.agent.start()
                except Exception as exc:
                    log.exception("relay startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await self.agent.stop()
                await self.redis.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
