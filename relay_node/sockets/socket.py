"""One relayed socket: the upstream WebSocket plus the sequencing state of both directions.

A socket has no task of its own: the upstream (``relay_node.sockets.upstream``, an asyncio protocol) hands
it each message from the target by a plain call, the table's sweep drives the keepalive, polls
wait on a plain future and sends write under a FIFO lock, so a message costs no task creation.
Whoever collects the messages (a waiting poll or an open stream) is the socket's ``receiver``
(``relay_node.sockets.receivers``): the socket wakes it or replaces it, never asks what it is; the
connection its messages last went out on is its ``carrier``, and a newer one cuts it if the client
left the answer there unread (``receivers.supersede``: the receive side is bounded per socket).

The socket's lifecycle is ``self.state`` (``polysocket_core.lifecycle.SocketState``); it changes
only in ``_move``, which also performs what entering each state means. Which close code goes to
the target and which one the client sees is decided in ``polysocket_core.lifecycle``.

Memory per socket is bounded in bytes (issue 10, D1). Messages the client has not acknowledged are
kept until ``--buffer-bytes``; at that bound the socket answers the upstream "full" and it pauses
its transport (the socket is "parked", ``_room`` set), so the target's further data waits in the
kernel's and the target's buffers, not here. A parked socket therefore holds at most the buffer,
the messages that completed in the read chunk that crossed it (one message, or up to one read chunk
of smaller ones, encoded here), and the raw bytes of the message in progress in websockets' parser
(less than one message): with the defaults and 4 MiB binary messages, 1 + 5.3 + 4 MiB. Once the
socket is closing, reading resumes so the closing handshake can finish, and messages beyond the
bound are dropped (a browser drops messages after ``close()`` too); once it is freed, everything it
buffered is let go at once and the upstream only drains the connection until it ends (within
``--close-timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from websockets.protocol import State

from polysocket_core import wire
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.lifecycle import (
    CLOSED_LINGER_S,
    CloseCause,
    SocketState,
    SweepVerdict,
    can_move,
    client_close,
    decide_close,
    sweep_verdict,
)
from polysocket_core.reservations import Reservation
from polysocket_core.sequencing import Frame, InboundSequencer, OutboundBuffer, poll_answer
from polysocket_core.wire import CLOSE_TOO_BIG, binary_fragment, text_fragment

from ..metrics import RelayMetrics
from .limits import SocketLimits
from .memory import trimmer
from .pressure import BufferBudget
from .receivers import Carrier, PollReceiver, Receiver, supersede
from .upstream import Upstream

log = logging.getLogger("polysocket.relay")

__all__ = ["CLOSED_LINGER_S", "RelaySocket", "SocketState"]

OPEN, CLOSING, CLOSED, FREED = SocketState.OPEN, SocketState.CLOSING, SocketState.CLOSED, SocketState.FREED
UPSTREAM_OPEN = State.OPEN
_NEVER = float("inf")


def _nobody_sweeps(sid: str, at: float) -> None:
    """``look_by`` of a socket outside a table (tests, benchmarks): no sweep to tell."""


class RelaySocket:
    __slots__ = ("_carrier", "_close_seq", "_dropped", "_imposed", "_room", "_sent_through", "_stall", "_write_lock",
                 "_writers", "budget", "claim_by", "config", "conn", "id", "inbound", "last_seen", "look_by", "meta",
                 "metrics", "on_gone", "outbound", "protocol", "receiver", "reservation", "state")

    def __init__(
        self,
        sid: str,
        conn: Upstream,
        config: SocketLimits,
        metrics: RelayMetrics,
        on_gone: Callable[[RelaySocket], None],
        reservation: Reservation,
        meta: dict[str, str] | None = None,
        claim_by: float | None = None,
        look_by: Callable[[str, float], None] | None = None,
        budget: BufferBudget | None = None,
    ) -> None:
        self.id = sid
        self.conn = conn
        self.config = config
        self.metrics = metrics
        self.on_gone = on_gone  # called once, when the socket is freed
        # Asks the sweep to look at the socket of this id no later than a time (``relay_node.sockets.deadlines``):
        # called when a check falls due earlier than ``next_due`` said at the last look. By id: the
        # sweep's queue must not keep a freed socket.
        self.look_by = look_by or _nobody_sweeps
        self.reservation = reservation  # released when the socket is freed
        # What every socket of the table holds for its client, against --buffer-budget (relay_node.sockets.pressure)
        self.budget = budget if budget is not None else BufferBudget(None, config.capacity)
        self.meta = meta or {}  # admission facts for reporting (caller, origin)
        self.protocol = conn.subprotocol or ""
        self.inbound = InboundSequencer(config.max_message_bytes)
        self.outbound = OutboundBuffer()
        self.state = OPEN
        # The claim timer (polysocket_core.lifecycle): the monotonic time by which a client request
        # must name this socket, None once one did (or for a socket no router hands on).
        self.claim_by = claim_by
        # The receiver: the poll waiting for messages or the open /stream, if any (one at a time).
        self.receiver: Receiver | None = None
        self._carrier: Carrier | None = None  # the connection the last stream or poll answered on
        self.last_seen = time.monotonic()
        self._close_seq = -1  # seq of the final close message (CLOSED)
        self._imposed: tuple[int, str] | None = None  # close code/reason the relay imposes on the client
        self._sent_through = -1  # highest send seq whose frame was handed to the target
        self._write_lock: asyncio.Lock | None = None  # created by the first send that waits: idle sockets stay small
        self._writers = 0  # sends holding or waiting for the write lock
        self._room: bool | None = None  # True while parked: reading upstream waits for acks
        self._dropped = 0  # messages from the target dropped once the close started
        self._stall: tuple[float, int, int] | None = None  # a write waiting: since, buffered bytes, sent seq
        conn.attach(self, self.last_seen, config.ping_interval_s)

    @property
    def token_id(self) -> str:
        return self.reservation.token_id

    # the lifecycle

    def _move(self, new: SocketState) -> bool:
        """Enter ``new`` if the lifecycle allows it from the current state; False if not (no-op)."""
        if not can_move(self.state, new):
            return False
        self.state = new
        if new is CLOSED:
            # the linger for its close message to be collected may be due before what the sweep planned
            self.look_by(self.id, self.last_seen + min(self.config.idle_timeout_s, CLOSED_LINGER_S))
            code, reason = client_close(self._imposed, self._received_close())
            self._close_seq = self.outbound.next_seq
            fragment = wire.close_fragment(self._close_seq, code, reason)
            self.outbound.push(fragment)
            self.budget.took(len(fragment), 0)  # nothing parks on the close message
            self._wake()
        elif new is CLOSING:
            self._free_room()  # a parked reader reads again, so the closing handshake can finish
        elif new is FREED:
            self._wake()
            self._free_room()  # the reader must not stay parked once nobody will ack
            self.reservation.release()
            self.on_gone(self)
            self._carrier = None  # its answers finish (or not) on their own; the socket lets go
            # Nobody will poll again: what was buffered goes now, not when the last reference does.
            trimmer.released += self.outbound.unacked_bytes
            self.budget.released(self.outbound.unacked_bytes)
            self.outbound = OutboundBuffer()
            self.inbound = InboundSequencer(0)
            if self.conn.proto.state is UPSTREAM_OPEN:
                self.conn.abort()  # freed without a close under way: nobody else would end it
        return True

    def _received_close(self) -> tuple[int, str] | None:
        rcvd = self.conn.proto.close_rcvd
        return None if rcvd is None else (int(rcvd.code), rcvd.reason)

    def close(self, cause: CloseCause, code: int | None = None, reason: str = "") -> None:
        """Close for ``cause``: start the closing handshake with the target (the reader reports the
        outcome to the client), or free the socket at once when nobody will collect a close."""
        decision = decide_close(cause, code, reason)
        if decision.imposed and self._imposed is None and self.state in (OPEN, CLOSING):
            self._imposed = (decision.code, decision.reason)
        self._move(CLOSING)
        if self.state is CLOSING:
            # websockets sends a close frame without a status code for None, as close() asks
            self.conn.close(None if decision.code == wire.CLOSE_NO_STATUS else decision.code, decision.reason)
        if decision.frees:
            self._move(FREED)

    def close_upstream(self, code: int, reason: str) -> None:
        """The client's ``/close``."""
        self.close(CloseCause.CLIENT, code, reason)

    def free(self) -> None:
        """Leave the table now (the upstream close, if one is under way, finishes on its own)."""
        self._move(FREED)

    def claim(self) -> None:
        """A client request named the socket: its browser has it, the claim timer stops."""
        self.claim_by = None

    def sweep(self, now: float) -> SweepVerdict | None:
        """Free the socket if it has been left alone too long; say why (None: kept)."""
        claim_by = self.claim_by
        verdict = sweep_verdict(self.state, now - self.last_seen, self.receiver is not None,
                                self.config.idle_timeout_s, claim_overdue=claim_by is not None and now > claim_by)
        if verdict is SweepVerdict.UNCLAIMED:
            self.close(CloseCause.ABANDONED)  # frees it whatever its state: nobody will collect a close
        elif verdict is SweepVerdict.IDLE:
            self.close(CloseCause.IDLE)
        elif verdict is SweepVerdict.UNCOLLECTED:
            self.free()
        return verdict

    def next_due(self, now: float) -> float:
        """The earliest time the sweep's checks can change their mind about this socket, as things
        stand (``relay_node.sockets.deadlines``: later moves, such as a new ``last_seen``, are found
        when it comes; earlier ones call ``look_by``). Mirrors ``SocketTable.sweep``'s checks."""
        state = self.state
        if state is FREED:
            return _NEVER
        cfg = self.config
        quiet_limit = min(cfg.idle_timeout_s, CLOSED_LINGER_S) if state is CLOSED else cfg.idle_timeout_s
        due = self.last_seen + quiet_limit
        if due <= now:  # overdue, yet spared by a receiver: look again every sweep until it goes
            due = now + cfg.sweep_interval_s
        if self.claim_by is not None:
            due = min(due, self.claim_by)
        if state is OPEN:
            gap_since = self.inbound.gap_since
            if gap_since is not None:
                due = min(due, gap_since + cfg.gap_hold_s)
            lock = self._write_lock
            if lock is not None and lock.locked():  # a write waits: sampled every sweep for a stall
                due = min(due, now + cfg.sweep_interval_s)
            due = min(due, self.conn.keepalive_due(now, cfg.ping_interval_s, cfg.ping_timeout_s))
        return due

    def write_stalled(self, now: float, limit: float) -> bool:
        """True once a write to the target has made no progress for ``limit`` seconds: the target
        stopped reading. (websockets' keepalive cannot tell: its ping waits behind the write.)
        Asked by the sweeper; the send path pays nothing for it."""
        lock = self._write_lock
        if lock is None or not lock.locked() or self.state is not OPEN:
            self._stall = None
            return False
        size = self.conn.write_buffer_size()
        stall = self._stall
        if size == 0 or stall is None or size < stall[1] or self._sent_through != stall[2]:
            self._stall = (now, size, self._sent_through)  # moving (or just started): a new reference
            return False
        return now - stall[0] >= limit

    def fail_stalled(self) -> None:
        """The target stopped reading: the client is told 1011, the connection is dropped (a close
        frame could not get through either), and the sends waiting on it get ``socket_closed``."""
        self.close(CloseCause.STALLED)
        self.conn.abort()

    def keepalive(self, now: float) -> bool:
        """Ping the target when due (asked by the sweeper); True when its last ping went
        unanswered for ``--ping-timeout``: the connection is failed and the client gets 1006."""
        if self.state is not OPEN or not self.conn.keepalive(now, self.config.ping_interval_s,
                                                             self.config.ping_timeout_s):
            return False
        self._move(CLOSING)  # the upstream's end (within --close-timeout) queues the close message
        return True

    def abort(self) -> None:
        """Drop the upstream connection without a handshake (last resort at shutdown)."""
        self.conn.abort()
        self._move(FREED)

    # upstream -> client

    def upstream_message(self, msg: str | bytes) -> bool:
        """A message from the target (called by the upstream); True: the buffer is full, the
        upstream pauses reading until an ack makes room (``_free_room``)."""
        state = self.state
        out = self.outbound
        if state is FREED or (state is CLOSING
                              and out.unacked_bytes >= self.budget.bound(self.config.buffer_high_bytes)):
            # Nobody will collect it (freed), or the socket is closing and full (by its own bound, or by
            # its share of the relay's budget): dropped, so the closing handshake behind it can be read.
            self._dropped += 1
            return False
        fragment = text_fragment(out.next_seq, msg) if isinstance(msg, str) else binary_fragment(out.next_seq, msg)
        out.push(fragment)
        high = self.config.buffer_high_bytes
        bound = self.budget.took(len(fragment), high)  # its own bound, or its share of the relay's budget
        metrics = self.metrics
        metrics.bytes_out.value += len(msg)
        metrics.frames_out.value += 1
        self._wake()
        if state is OPEN and out.unacked_bytes >= bound:
            if self._room is None and out.unacked_bytes < high:  # parked by the relay's budget, not its own
                self.budget.park(self)
                metrics.budget_parks.value += 1
            self._room = True  # parked until the client acknowledges below the bound
            return True
        return False

    def upstream_lost(self) -> None:
        """The upstream connection ended: the client gets the close message (unless freed)."""
        proto = self.conn.proto
        sent = proto.close_sent
        if sent is not None and sent.code == CLOSE_TOO_BIG and proto.close_rcvd is None and self._imposed is None:
            # websockets failed the connection on a target message over --max-message: the client
            # learns why (1009), as for its own messages, rather than a bare 1006.
            decision = decide_close(CloseCause.TOO_BIG, reason="message from the target is too big")
            self._imposed = (decision.code, decision.reason)
        if self._dropped:
            log.info("socket %s: %d messages from the target after the close started were dropped",
                     self.id[:8], self._dropped)
        self._move(CLOSED)  # a no-op once freed: nobody would collect it

    def _wake(self) -> None:
        """Messages were queued (or the socket closed or was freed): the receiver gets them now."""
        r = self.receiver
        if r is not None:
            r.wake()

    def _free_room(self) -> None:
        if self._room is not None:
            self._room = None
            self.budget.forget(self)
            self.conn.resume_reading()

    def relieved(self) -> None:
        """The relay's buffer budget has room again (``BufferBudget.released``): read again, unless
        this socket's own bound still holds it (then its client's acks free it, ``acknowledge``)."""
        if self._room is not None and self.outbound.unacked_bytes < self.config.buffer_high_bytes:
            self._free_room()

    # client -> upstream

    async def send(self, p: wire.SendParams) -> None:
        self.last_seen = time.monotonic()
        if p.ack >= 0:
            self.acknowledge(p.ack)  # acks ride on sends while a stream delivers
        if self.state is not OPEN:
            if p.seq <= self._sent_through:
                return  # a retry of a send that reached the target before the close
            raise PolysocketError(ErrorCode.SOCKET_CLOSED, "socket is closing or closed")
        if self.inbound.is_duplicate(p.seq):
            return  # a retry of an accepted send: acknowledged, not sent twice
        try:
            frames = self.inbound.accept(p.seq, p.kind, p.fin, p.data, self.last_seen)
        except PolysocketError as exc:
            # The sequencer refused something it cannot skip: the stream of sends is broken, so the
            # socket fails with a clear code rather than continuing with a message missing.
            if exc.code is ErrorCode.PAYLOAD_TOO_LARGE:
                self.close(CloseCause.TOO_BIG)
            elif exc.code is ErrorCode.BAD_REQUEST:
                self.close(CloseCause.BAD_STREAM, reason=exc.message)
            raise
        if not frames:
            gap_since = self.inbound.gap_since
            if gap_since is not None:  # a send is missing: the gap hold runs from now
                self.look_by(self.id, gap_since + self.config.gap_hold_s)
            return
        conn = self.conn
        lock = self._write_lock
        if (not self._writers and (lock is None or not lock.locked()) and len(frames) == 1  # perf: lockless-send
                and not conn.write_paused):
            # The common case: no send is writing or waiting, and the transport takes the frame
            # now. Nothing awaits before it is written, so the order is the lock's; only a drain
            # waits, under the lock (later sends queue behind it, the sweeper sees the stall).
            frame = frames[0]
            if self.state is not OPEN:
                raise PolysocketError(ErrorCode.SOCKET_CLOSED, "socket is closing or closed")
            if not conn.send(frame.data, frame.kind == "t"):
                self._move(CLOSING)  # the upstream is going: its end queues the close message
                raise PolysocketError(ErrorCode.SOCKET_CLOSED, "upstream connection closed")
            if conn.write_paused:
                self.look_by(self.id, self.last_seen)  # a write waits: the sweep samples it for a stall
                self._writers += 1
                try:
                    async with self._lock():
                        await conn.drain()
                finally:
                    self._writers -= 1
            self._sent(frame)
            return
        self._writers += 1
        self.look_by(self.id, self.last_seen)  # writes may wait: the sweep samples them for a stall
        try:
            async with self._lock():  # FIFO: frames leave in the order the sequencer released them
                for frame in frames:
                    if self.state is not OPEN:
                        raise PolysocketError(ErrorCode.SOCKET_CLOSED, "socket is closing or closed")
                    if not conn.send(frame.data, frame.kind == "t"):
                        self._move(CLOSING)  # the upstream is going: its end queues the close message
                        raise PolysocketError(ErrorCode.SOCKET_CLOSED, "upstream connection closed")
                    await conn.drain()
                    self._sent(frame)
        finally:
            self._writers -= 1

    def _lock(self) -> asyncio.Lock:
        lock = self._write_lock
        if lock is None:
            lock = self._write_lock = asyncio.Lock()
        return lock

    def _sent(self, frame: Frame) -> None:
        self._sent_through = frame.seq
        metrics = self.metrics
        metrics.frames_in.value += 1
        metrics.bytes_in.value += len(frame.data)

    # acknowledgements (polls, streams and sends carry them)

    def acknowledge(self, ack: int) -> bool:
        """The client processed every message up to ``ack`` (a poll's, a stream's or a send's ack):
        forget them, let a parked reader go on; True when that acked the close and freed the socket."""
        out = self.outbound
        held = out.unacked_bytes
        out.ack(ack)
        if held != out.unacked_bytes:
            trimmer.released += held - out.unacked_bytes
            self.budget.released(held - out.unacked_bytes)  # may relieve this socket, and others
        if self._room is not None:
            high = self.config.buffer_high_bytes
            if out.unacked_bytes < self.budget.bound(high):
                self._free_room()
            elif out.unacked_bytes < high:  # below its own bound, held by the budget: read again on relief
                self.budget.park(self)
        if self.state is CLOSED and ack >= self._close_seq:
            self.free()  # the client has the close: nothing left to keep
            return True
        return False

    # the receiver (relay_node.sockets.receivers)

    def take_receiver(self, receiver: Receiver, carrier: Carrier | None) -> None:
        """``receiver`` is the receiver now, answering on ``carrier``: the previous one is replaced
        (a stream ends, a waiting poll answers at once, empty) and its connection cut if it holds
        more than the slack unsent."""
        previous = self.receiver
        self.receiver = receiver
        if previous is not None:
            previous.replaced()
        self._carried_by(carrier)

    def _carried_by(self, carrier: Carrier | None) -> None:
        """The socket's messages go out on ``carrier`` from now (once per stream or poll)."""
        previous, self._carrier = self._carrier, carrier
        if supersede(previous, carrier):
            self.metrics.answers_cut.value += 1

    def release_receiver(self, receiver: Receiver) -> None:
        """``receiver`` ended: the socket counts as idle from now."""
        if self.receiver is receiver:
            self.receiver = None

    def known_event_id(self, last_event_id: int) -> int:
        """``Last-Event-ID`` acks like ``ack`` but is ignored above the last seq queued: the client
        does not choose what EventSource sends, so it is not refused either."""
        return last_event_id if last_event_id < self.outbound.next_seq else -1
        self.last_seen = time.monotonic()

    # polling

    async def poll(self, ack: int, ttl_ms: int, carrier: Carrier | None = None) -> bytes:
        """Messages not acked after ``ack``, waiting up to ``ttl_ms`` for one; answered on ``carrier``
        (the poll's connection), which takes the socket over from the previous receiver's."""
        self.last_seen = time.monotonic()
        out = self.outbound
        if self.acknowledge(ack):
            return poll_answer([])
        previous = self.receiver
        if previous is not None:
            previous.replaced()  # one receiver per socket: a stream ends, a waiting poll answers now
        self._carried_by(carrier)
        if not len(out) and ttl_ms > 0:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            receiver = self.receiver = PollReceiver(fut)
            timer = loop.call_later(ttl_ms / 1000, PollReceiver.wake, receiver)
            started = self.last_seen
            try:
                await fut
            finally:
                timer.cancel()
                # Not `if self.receiver is receiver` here: mypy narrows self.receiver to the
                # PollReceiver assigned above, across the await, and mypyc would check that type.
                self.release_receiver(receiver)
                self.last_seen = time.monotonic()
                self.metrics.poll_waits.observe(self.last_seen - started)
            if receiver.superseded:
                return poll_answer([])  # the messages are the newer receiver's
        return poll_answer(out.take(self.config.poll_batch_bytes))
