"""The node's side of the control plane: registration, heartbeat, establish requests, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from polysocket_core.control import (
    NODE_REPORT_LUA,
    REPLY_LUA,
    REPLY_TTL_SECONDS,
    EstablishReply,
    EstablishRequest,
    Keys,
    KillRequest,
    NodeReport,
    decode_inbox,
)
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.lifecycle import CloseCause
from polysocket_core.reservations import Reservation
from polysocket_core.wire import CLOSE_GOING_AWAY
from polysocket_redis.pipelines import Pipelines, RedisPyPipelines, raise_errors, run_script

from ..settings import RelayConfig
from ..sockets.socket import RelaySocket
from ..sockets.table import SocketTable

log = logging.getLogger("polysocket.relay")

# An open that is done within this is answered once (``done``), a slower one is acked at this point
# first: far below every router's ack timeout (2 s by default), above a loopback-near target's
# open (about 1-3 ms, more on a loaded node). Saves a reply round trip per connect on the relay and a
# BLPOP on the router (bench/PERF_LEDGER.md, ``relay-answers-once``).
ACK_AFTER_S = 0.02
# How long one inbox read blocks. A request wakes it at once whatever this is, so it only sets how
# often an idle node asks again: every second, a fleet of 1,000 idle nodes cost Valkey 1,000 reads
# a second for nothing (bench/PERF_LEDGER.md, ``long-inbox-block``). It stays far below the node's
# read timeout (redis_client.RIDE_OUT, checked by tests/unit/test_redis_client.py): a read that long
# is a dead connection, not an idle inbox. The price: a node that freezes leaves its read pending in
# Valkey for up to this long, and that read takes at most one request with it (the others wait in the
# inbox, where their routers take them back after the ack timeout); that one request's router waits
# for the node's heartbeat to lapse before trying another node, as for a node frozen after an ack.
INBOX_BLOCK_S = 15.0

class NodeAgent:
    def __init__(self, config: RelayConfig, table: SocketTable, redis: aioredis.Redis,
                 pipelines: Pipelines | None = None) -> None:
        self.config = config
        self.table = table
        self.redis = redis
        # The inbox read and the answers: on the node's own connections where it has them (RelayNode)
        self.pipelines = pipelines or RedisPyPipelines(redis)
        self.keys = Keys(config.key_prefix)
        self.draining = False
        self.fqdn = config.fqdn  # the name it registers under: the node's, decided when it starts
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        # Deregistering a node that never registered (Redis refused it at start) would only add a
        # second error line; a registration whose reply was lost leaves an alive key that expires.
        self._registered = False
        self._report_script = redis.register_script(NODE_REPORT_LUA)
        self._reply_script = redis.register_script(REPLY_LUA)

    async def start(self, fqdn: str | None = None) -> None:
        """Register as ``fqdn`` (the node's effective name; default: the configured one) and run."""
        if fqdn is not None:
            self.fqdn = fqdn
        await self._register()
        self._registered = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat_loop()),
            loop.create_task(self._inbox_loop()),
            loop.create_task(self.table.run_sweeper()),
        ]
        log.info("node %s registered as %s (capacity %d)", self.config.node_id, self.fqdn,
                 self.config.capacity)

    def _report(self, mode: str, settle: list[tuple[str, str]] | None = None) -> NodeReport:
        """What the node publishes at registration, with every heartbeat and when it leaves. Its token
        counts are absolute: rewritten whole by every heartbeat, so they heal after Redis lost its
        data and cannot drift below zero. The requests taken since the last beat leave the routers'
        reservation sets in the same step that starts counting them here, so a socket is never
        counted twice nor missed (polysocket_core.reservations)."""
        cfg = self.config
        return NodeReport(node_id=cfg.node_id, mode=mode, ttl_ms=int(cfg.heartbeat_ttl_s * 1000),
                          fqdn=self.fqdn, capacity=cfg.capacity, sockets=self.table.load,
                          draining=self.draining, started_at=int(time.time()),
                          counts=self.table.ledger.counts() if mode != "leave" else {},
                          settle=settle or ())

    async def _send_report(self, mode: str, settle: list[tuple[str, str]] | None = None) -> None:
        """One report (``NODE_REPORT_LUA``) on the node's own connections: a fleet's heartbeats are
        most of what it costs at rest (bench/results/fleet.md)."""
        await run_script(self.pipelines, self._report_script, self.keys.fleet,
                         self._report(mode, settle).args(self.keys))

    async def _register(self) -> None:
        # A restarted node holds nothing yet; requests queued for its previous life are dropped
        # (their routers time out and try another node; their reservations expire).
        await self._send_report("register")

    async def _beat(self) -> None:
        ledger = self.table.ledger
        settle = ledger.begin_settle()
        try:
            await self._send_report("beat", settle)
        except BaseException:
            ledger.settle_failed(settle)
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
                [item] = raise_errors(await self.pipelines.run(  # perf: long-inbox-block
                    [("BLPOP", inbox, INBOX_BLOCK_S)], blocks=True))
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

    async def _reply(self, request_id: str, reply: EstablishReply) -> bool:
        """Push ``reply`` for the router; in the same command, whether that router has given up on
        the request (its ``abandoned`` marker): the check a ``done`` needs before the socket is handed
        on costs no trip of its own."""
        keys = [self.keys.reply(request_id), self.keys.abandoned(request_id)]
        abandoned = await run_script(self.pipelines, self._reply_script, keys,  # perf: reply-script
                                     [reply.encode(), REPLY_TTL_SECONDS])
        return bool(abandoned)

    async def _open_acking_if_slow(self, req: EstablishRequest, res: Reservation) -> RelaySocket:
        """``table.open``, with an ``ack`` sent only if the open takes longer than ``ACK_AFTER_S``:
        an open that is done by then is answered once (its ``done`` tells the router the request
        was taken, as the ack would have), a slower one is acked well inside the router's ack
        timeout, so the router still knows a node took the request long before the target's dial
        ends (and fails over only to nodes that did not). A failed ack stops the open: the router
        will withdraw the request or give up on this node, so a socket must not be left open."""
        opening = asyncio.ensure_future(self.table.open(req, res))  # perf: relay-answers-once
        try:
            done, _ = await asyncio.wait((opening,), timeout=ACK_AFTER_S)
            if not done:
                await self._reply(req.id, EstablishReply(phase="ack"))
        except BaseException:  # the ack failed, or the node is stopping
            opening.cancel()
            with contextlib.suppress(BaseException):
                (await opening).close(CloseCause.ABANDONED)  # it finished before the cancel
            raise
        return await opening

    async def _handle(self, req: EstablishRequest) -> None:
        """Open the socket a router asked for and answer it. The request's token reservation is
        owned from here: by the socket once it is open, else released on every other path."""
        res = self.table.ledger.take(req.id, req.token_id)
        # Whether the router gave up (a node frozen with the request already handed to it) is asked
        # before the open only once the router may have: within its ack timeout, nothing but the
        # inbox's LREM withdraws a request, so a fresh one costs no round trip here (and the
        # ``done``'s script below asks again in the same command as the answer).
        now_ms = time.time() * 1000
        if now_ms > req.expires_at_ms or (
                now_ms >= req.firm_until_ms and await self._abandoned(req)):  # perf: fresh-request-unchecked
            log.info("skipping establish request %s: expired or given up by the router", req.id)
            res.release()
            return
        try:
            if self.draining:
                raise PolysocketError(ErrorCode.DRAINING, "relay node is draining")
            sock = await self._open_acking_if_slow(req, res)
        except PolysocketError as exc:
            res.release()
            await self._reply_safely(req.id, EstablishReply(phase="done", ok=False, error=exc.code.value,
                                                            message=exc.message))
            return
        except RedisError as exc:  # the ack could not be sent: the socket was not opened, or closed
            res.release()
            log.warning("establish %s: cannot reply: %s", req.id, exc)
            return
        except asyncio.CancelledError:  # the node is stopping
            res.release()
            raise
        except Exception:  # a bug must still answer the router, never leave it waiting
            res.release()
            log.exception("establish %s failed", req.id)
            await self._reply_safely(req.id, EstablishReply(
                phase="done", ok=False, error=ErrorCode.INTERNAL.value,
                message="relay error while opening the socket"))
            return
        # The upstream is open and the socket owns the reservation: every way out below that does
        # not hand the socket to the router closes it, which frees it and releases the reservation.
        if time.time() * 1000 > req.expires_at_ms:
            log.info("establish %s: opened after the request expired; closing", req.id)
            sock.close(CloseCause.ABANDONED)
            return
        try:
            abandoned = await self._reply(req.id, EstablishReply(
                phase="done", ok=True, protocol=sock.protocol, idle_ms=int(self.config.idle_timeout_s * 1000)))
            if abandoned:  # nobody reads that answer (it expires with the reply list)
                log.info("establish %s: opened after the router gave up; closing", req.id)
                sock.close(CloseCause.ABANDONED)
        except asyncio.CancelledError:
            sock.close(CloseCause.ABANDONED)
            raise
        except Exception as exc:  # RedisError after the retries, or a bug: nobody will use the socket
            log.warning("establish %s: cannot hand the socket to the router (%s); closing it", req.id, exc)
            sock.close(CloseCause.ABANDONED)

    async def _abandoned(self, req: EstablishRequest) -> bool:
        """Has the router given up on this request (it thought this node frozen)? In doubt, no:
        the expiry still bounds how late a socket can be opened."""
        try:
            return bool(await self.redis.exists(self.keys.abandoned(req.id)))
        except RedisError:
            return False

    async def _reply_safely(self, request_id: str, reply: EstablishReply) -> None:
        try:
            await self._reply(request_id, reply)
        except RedisError as exc:
            log.warning("establish %s: cannot reply: %s", request_id, exc)

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
        try:
            await self._send_report("leave")
        except RedisError as exc:
            log.warning("deregister failed: %s", exc)

    async def stop(self) -> None:
        for t in [*self._tasks, *self._pending]:
            t.cancel()
        for t in [*self._tasks, *self._pending]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._registered:
            await self.deregister()
        self.table.abort_all()
