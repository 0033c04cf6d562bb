"""One relayed socket: the upstream WebSocket plus the sequencing state of both directions.

The upstream reader is the only task per socket; polls wait on a plain future and sends write
under a FIFO lock, so a message costs no task creation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from polysocket_core import wire
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.sequencing import InboundSequencer, OutboundBuffer, poll_answer
from polysocket_core.wire import binary_fragment, text_fragment

from .config import RelayConfig
from .metrics import RelayMetrics

log = logging.getLogger("polysocket.relay")

CLOSED_LINGER_S = 10.0  # keep a closed socket this long for a client that has not acked the close


class RelaySocket:
    __slots__ = ("_close_task", "_reader", "_room", "_write_lock", "close_seq", "closing", "config",
                 "conn", "fail", "id", "inbound", "last_seen", "meta", "metrics", "on_gone",
                 "outbound", "protocol", "waiter")

    def __init__(
        self,
        sid: str,
        conn: ClientConnection,
        config: RelayConfig,
        metrics: RelayMetrics,
        on_gone: Callable[[RelaySocket], None],
        meta: dict[str, str] | None = None,
    ) -> None:
        self.id = sid
        self.conn = conn
        self.config = config
        self.metrics = metrics
        self.on_gone = on_gone
        self.meta = meta or {}
        self.protocol = conn.subprotocol or ""
        self.inbound = InboundSequencer(config.max_message_bytes)
        self.outbound = OutboundBuffer()
        self.waiter: asyncio.Future[None] | None = None
        self.last_seen = time.monotonic()
        self.closing = False  # no more sends: client closed, relay closing, or upstream gone
        self.close_seq = -1  # seq of the final close message once it is queued
        self.fail: tuple[int, str] | None = None  # close code/reason the relay imposes on the client
        self._write_lock: asyncio.Lock | None = None  # created by the first send: idle sockets stay small
        self._room: asyncio.Future[None] | None = None  # set while reading upstream waits for acks
        self._close_task: asyncio.Task[None] | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read_upstream())

    # upstream -> client

    async def _read_upstream(self) -> None:
        conn, out = self.conn, self.outbound
        bytes_out, frames_out = self.metrics.bytes_out, self.metrics.frames_out
        high = self.config.buffer_high_bytes
        try:
            while True:
                if out.unacked_bytes >= high:
                    room = self._room = asyncio.get_running_loop().create_future()
                    await room
                msg = await conn.recv()
                if isinstance(msg, str):
                    out.push(text_fragment(out.next_seq, msg))
                else:
                    out.push(binary_fragment(out.next_seq, msg))
                bytes_out.value += len(msg)
                frames_out.value += 1
                self._wake()
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug or an unexpected transport error: report it as an abnormal close
            log.exception("socket %s: upstream reader failed", self.id[:8])
        self._finish()

    def _finish(self) -> None:
        """Queue the final close message (once) and stop accepting sends."""
        if self.close_seq >= 0:
            return
        self.closing = True
        if self.fail is not None:
            code, reason = self.fail
        else:
            code = self.conn.close_code or wire.CLOSE_ABNORMAL
            reason = self.conn.close_reason or ""
            if self.conn.protocol.close_rcvd is None:
                code = wire.CLOSE_ABNORMAL  # no closing handshake from the target
        self.close_seq = self.outbound.next_seq
        self.outbound.push(wire.close_fragment(self.close_seq, code, reason))
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # client -> upstream

    async def send(self, p: wire.SendParams) -> None:
        self.last_seen = time.monotonic()
        if self.inbound.is_duplicate(p.seq):
            return  # a retry of an accepted send: acknowledged, not sent twice
        if self.closing:
            raise PolysocketError(ErrorCode.SOCKET_CLOSED, "socket is closing or closed")
        try:
            frames = self.inbound.accept(p.seq, p.kind, p.fin, p.data, self.last_seen)
        except PolysocketError as exc:
            # The sequencer refused something it cannot skip: the stream of sends is broken, so the
            # socket fails with a clear code rather than continuing with a message missing.
            if exc.code is ErrorCode.PAYLOAD_TOO_LARGE:
                self.close_upstream(wire.CLOSE_TOO_BIG, "message too big", fail=True)
            elif exc.code is ErrorCode.BAD_REQUEST:
                self.close_upstream(wire.CLOSE_PROTOCOL_ERROR, exc.message, fail=True)
            raise
        if not frames:
            return
        lock = self._write_lock
        if lock is None:
            lock = self._write_lock = asyncio.Lock()
        async with lock:  # FIFO: frames leave in the order the sequencer released them
            for frame in frames:
                try:
                    await self.conn.send(frame.data, text=frame.kind == "t")
                except ConnectionClosed:
                    raise PolysocketError(ErrorCode.SOCKET_CLOSED, "upstream connection closed") from None
                self.metrics.frames_in.inc()
                self.metrics.bytes_in.inc(len(frame.data))

    # polling

    async def poll(self, ack: int, ttl_ms: int) -> bytes:
        self.last_seen = time.monotonic()
        out = self.outbound
        out.ack(ack)
        room = self._room
        if room is not None and out.unacked_bytes < self.config.buffer_high_bytes:
            self._room = None
            if not room.done():
                room.set_result(None)
        if self.close_seq >= 0 and ack >= self.close_seq:
            self.on_gone(self)  # the client has the close: nothing left to keep
            return poll_answer([])
        if not len(out) and ttl_ms > 0:
            self._wake()  # only one poll waits: the previous one answers now
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            self.waiter = fut
            timer = loop.call_later(ttl_ms / 1000, _resolve, fut)
            started = self.last_seen
            try:
                await fut
            finally:
                timer.cancel()
                if self.waiter is fut:
                    self.waiter = None
                self.last_seen = time.monotonic()
                self.metrics.poll_waits.observe(self.last_seen - started)
        return poll_answer(out.take(self.config.poll_batch_bytes))

    # closing

    def close_upstream(self, code: int, reason: str, fail: bool = False) -> None:
        """Start the closing handshake with the target; the reader reports the outcome to the client."""
        if fail and self.fail is None:
            self.fail = (code, reason)
        self.closing = True
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.conn.close(code, reason)
        except Exception:
            log.exception("socket %s: close failed", self.id[:8])

    def is_idle(self, now: float) -> bool:
        """No poll waiting and none for the idle timeout (shorter once the close is queued)."""
        limit = self.config.idle_timeout_s
        if self.close_seq >= 0:
            limit = min(limit, CLOSED_LINGER_S)
        return self.waiter is None and now - self.last_seen > limit

    def abort(self) -> None:
        """Drop the upstream connection without a handshake (last resort at shutdown)."""
        self._reader.cancel()
        self._wake()
        if self._close_task is not None:
            self._close_task.cancel()
        if self.conn.transport is not None:
            self.conn.transport.abort()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
