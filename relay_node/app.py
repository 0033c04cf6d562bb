"""A relay node's parts wired together: socket table, control-plane agent, endpoints.

Not an ASGI app any more: the relay serves HTTP with its own protocol (``relay_node.http1``) and
runs its own lifecycle (``relay_node.server``), so ``start``/``stop`` are plain coroutines.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from .agent import NodeAgent
from .config import RelayConfig
from .endpoints import RelayEndpoints
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
        self.endpoints = RelayEndpoints(self.table, self.metrics, self.agent)

    async def start(self) -> None:
        """Register with the control plane and start taking establish requests."""
        await self.agent.start()

    async def stop(self) -> None:
        """Deregister, drop every socket, close Redis."""
        await self.agent.stop()
        await self.redis.aclose()
