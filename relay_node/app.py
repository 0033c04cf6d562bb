"""A relay node as one ASGI application: lifespan starts the control-plane agent, HTTP goes to RelayHTTP."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .agent import NodeAgent
from .config import RelayConfig
from .http import Receive, RelayHTTP, Scope, Send
from .metrics import RelayMetrics
from .table import SocketTable

log = logging.getLogger("polysocket.relay")


# After Redis restarts (or fails over) every pooled connection is dead. A connection idle for longer
# than the health-check interval is PINGed before use, and a command that meets a dead connection
# (ConnectionError) or times out is retried on a fresh one with exponential backoff (about 3 s in
# all), so a restart costs a short wait instead of one failed operation per pooled connection.
REDIS_RETRIES = 6
REDIS_BACKOFF = ExponentialBackoff(cap=1.0, base=0.05)
REDIS_HEALTH_CHECK_S = 5


def redis_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=60, socket_keepalive=True,
        health_check_interval=REDIS_HEALTH_CHECK_S,
        retry=Retry(REDIS_BACKOFF, REDIS_RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class RelayNode:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.metrics = RelayMetrics()
        self.table = SocketTable(config, self.metrics)
        # A read timeout far above any pause the node may suffer: a node that wakes up must still read
        # the establish request its BLPOP was handed (else the request, and its token reservation,
        # would be lost with the connection). Keepalive finds dead peers instead.
        self.redis = redis_client(config.redis_url)
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
