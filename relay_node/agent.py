"""The node's side of the control plane: registration, heartbeat, establish requests, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from polysocket_core.control import REPLY_TTL_SECONDS, EstablishReply, EstablishRequest, Keys, KillRequest, decode_inbox
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.wire import CLOSE_GOING_AWAY

from .config import RelayConfig
from .table import SocketTable

log = logging.getLogger("polysocket.relay")

NODE_RECORD_TTL_S = 3600  # a dead node's records linger this long at most (its alive key goes first)


class NodeAgent:
    def __init__(self, config: RelayConfig, table: SocketTable, redis: aioredis.Redis) -> None:
        self.config = config
        self.table = table
        self.redis = redis
        self.keys = Keys(config.key_prefix)
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._register()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat_loop()),
            loop.create_task(self._inbox_loop()),
            loop.create_task(self.table.run_sweeper()),
        ]
        log.info("node %s registered as %s (capacity %d)", self.config.node_id, self.config.fqdn,
                 self.config.capacity)

    def _record(self) -> dict[FieldT, EncodableT]:
        """The node's changing fields, written at registration and by every heartbeat."""
        cfg = self.config
        return {"fqdn": cfg.fqdn, "capacity": cfg.capacity, "sockets": self.table.load,
                "draining": "1" if self.draining else "0"}

    async def _register(self) -> None:
        cfg, k = self.config, self.keys
        async with self.redis.pipeline(transaction=True) as p:
            record = self._record()
            record.update({"id": cfg.node_id, "started_at": int(time.time())})
            p.hset(k.node(cfg.node_id), mapping=record)
            p.sadd(k.nodes, cfg.node_id)
            # A restarted node holds nothing yet; requests queued for its previous life are dropped
            # with their reservations (their routers time out and try another node).
            p.delete(k.node_tokens(cfg.node_id), k.inbox(cfg.node_id))
            p.set(k.alive(cfg.node_id), "1", px=int(cfg.heartbeat_ttl_s * 1000))
            await p.execute()

    async def _beat(self) -> None:
        cfg, k = self.config, self.keys
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(k.node(cfg.node_id), mapping=self._record())
            p.sadd(k.nodes, cfg.node_id)
            p.set(k.alive(cfg.node_id), "1", px=int(cfg.heartbeat_ttl_s * 1000))
            p.expire(k.node(cfg.node_id), NODE_RECORD_TTL_S)
            # Routers count a token's sockets up in the pick script; the node counts them down
            # when it gives them back. Never overwritten, so an in-flight reservation is never lost.
            released = self.table.take_released()
            for token, n in released.items():
                p.hincrby(k.node_tokens(cfg.node_id), token, -n)
            p.expire(k.node_tokens(cfg.node_id), NODE_RECORD_TTL_S)
            try:
                await p.execute()
            except RedisError:
                self.table.released.update(released)
                raise

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            try:
                await self._beat()
            except RedisError as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _inbox_loop(self) -> None:
        inbox = self.keys.inbox(self.config.node_id)
        while True:
            try:
                item = await self.redis.blpop([inbox], timeout=1)
            except RedisError as exc:
                log.warning("inbox read failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if item is None:
                continue
            try:
                req = decode_inbox(item[1])
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("dropping malformed inbox message: %s", exc)
                continue
            if isinstance(req, KillRequest):
                killed = self.table.kill_token(req.token_id, req.reason)
                log.info("closed %d sockets of token %s: %s", killed, req.token_id, req.reason)
                continue
            task = asyncio.get_running_loop().create_task(self._handle(req))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _reply(self, request_id: str, reply: EstablishReply) -> None:
        key = self.keys.reply(request_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.rpush(key, reply.encode())
            p.expire(key, REPLY_TTL_SECONDS)
            await p.execute()

    async def _handle(self, req: EstablishRequest) -> None:
        token = req.meta.get("token", "")
        if time.time() * 1000 > req.expires_at_ms:
            log.info("skipping expired establish request %s", req.id)
            self.table.release(token)
            return
        try:
            await self._reply(req.id, EstablishReply(phase="ack"))
            if self.draining:
                self.table.release(token)
                raise PolysocketError(ErrorCode.DRAINING, "relay node is draining")
            sock = await self.table.open(req.socket, req.target, req.protocols, req.meta, req.addresses)
        except PolysocketError as exc:
            await self._reply(req.id, EstablishReply(phase="done", ok=False, error=exc.code.value,
                                                     message=exc.message))
            return
        except RedisError as exc:  # the ack could not be sent: the socket was never opened
            log.warning("establish %s: cannot reply: %s", req.id, exc)
            self.table.release(token)
            return
        except Exception:  # a bug must still answer the router, never leave it waiting
            log.exception("establish %s failed", req.id)
            with contextlib.suppress(RedisError):
                await self._reply(req.id, EstablishReply(phase="done", ok=False, error=ErrorCode.INTERNAL.value,
                                                         message="relay error while opening the socket"))
            return
        if time.time() * 1000 > req.expires_at_ms:
            # The router gave up on this request; nobody will ever use the socket.
            sock.close_upstream(CLOSE_GOING_AWAY, "connect abandoned")
            self.table.forget(sock)
            return
        await self._reply(req.id, EstablishReply(phase="done", ok=True, protocol=sock.protocol))

    async def drain(self) -> None:
        """Refuse new sockets, keep serving for the grace period, close with 1001, deregister."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: %d sockets, grace %.1fs", len(self.table), self.config.drain_grace_s)
        with contextlib.suppress(RedisError):
            await self._beat()
        deadline = time.monotonic() + self.config.drain_grace_s
        while len(self.table) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await self.table.close_all(CLOSE_GOING_AWAY, "relay draining")
        # Give clients a moment to collect the close message with their next poll.
        linger = time.monotonic() + min(5.0, max(1.0, self.config.drain_grace_s))
        while len(self.table) and time.monotonic() < linger:
            await asyncio.sleep(0.1)
        await self.deregister()

    async def deregister(self) -> None:
        cfg, k = self.config, self.keys
        try:
            async with self.redis.pipeline(transaction=True) as p:
                p.srem(k.nodes, cfg.node_id)
                p.delete(k.node(cfg.node_id), k.alive(cfg.node_id), k.inbox(cfg.node_id),
                         k.node_tokens(cfg.node_id))
                await p.execute()
        except RedisError as exc:
            log.warning("deregister failed: %s", exc)

    async def stop(self) -> None:
        for t in [*self._tasks, *self._pending]:
            t.cancel()
        for t in [*self._tasks, *self._pending]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.deregister()
        self.table.abort_all()
