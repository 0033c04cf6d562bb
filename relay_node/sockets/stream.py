"""``GET /stream``: one socket's messages as a text/event-stream answer (docs/protocol.md).

A ``SocketStream`` is the socket's receiver while it is open (``relay_node.sockets.receivers``:
one receiver per socket, the newer wins, and the idle sweep spares it). It is driven by callbacks
only, no task: the socket calls ``wake`` whenever it queued a message (or closed, or was
freed), and the stream writes what it has not written yet, at once; one timer
writes heartbeats and ends the stream when its time budget is spent. Framing and budgets are the
pure ``polysocket_core.sse``.

Nothing is acknowledged by writing: messages stay in the socket's buffer until the client acks
them (on the next ``/stream`` or ``/poll``, or on a ``/send``), so a stream cut anywhere, even in
the middle of an event, loses nothing; the next stream writes every unacked message again. The
bytes a stream leaves queued in a slow client's transport are bounded by its byte budget
(``--stream-bytes``, heartbeats included, plus the message that crossed it): acks
on sends can free the socket's buffer without the stream having been read, so ``--buffer-bytes``
alone does not bound them. ``relay_node.edge.http1`` lets go of a connection whose client reads nothing,
and a newer stream or poll cuts this one's connection if it still holds more than a slack unsent
(``relay_node.sockets.receivers.supersede``): one such budget per socket, not per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Protocol

from polysocket_core import sse
from polysocket_core.lifecycle import SocketState
from polysocket_core.wire import StreamParams

from .receivers import Carrier

if TYPE_CHECKING:
    from .socket import RelaySocket

log = logging.getLogger("polysocket.relay")

CLOSED, FREED = SocketState.CLOSED, SocketState.FREED


class StreamSink(Carrier, Protocol):
    """Where a stream writes: the open answer of the HTTP layer (``relay_node.edge.http1``), on
    the connection that carries the socket's messages while the stream is its receiver."""

    def write_chunk(self, data: bytes) -> None: ...

    def end_stream(self) -> None: ...


def open_stream(sock: RelaySocket, p: StreamParams) -> SocketStream:
    """A ``/stream`` request for ``sock``: its ack applies now; the stream becomes the socket's
    receiver when it starts (``SocketStream.start``)."""
    sock.last_seen = time.monotonic()
    sock.acknowledge(max(p.ack, sock.known_event_id(p.last_event_id)))
    return SocketStream(sock, p)


class SocketStream(sse.StreamClock):  # perf: stream-no-task
    """One open ``/stream`` answer; ``cursor`` is the last seq written on it."""

    __slots__ = ("cursor", "loop", "pad", "sink", "sock", "timer")

    def __init__(self, sock: RelaySocket, p: StreamParams) -> None:
        loop = asyncio.get_running_loop()
        cfg = sock.config
        super().__init__(loop.time(), p.ttl_ms / 1000, cfg.stream_bytes, cfg.stream_seconds)
        self.sock = sock
        self.loop = loop
        self.pad = p.pad
        self.cursor = -1
        self.sink: StreamSink | None = None
        self.timer: asyncio.TimerHandle | None = None

    # the HTTP layer's StreamBody (relay_node.edge.http1)

    def start(self, sink: StreamSink) -> tuple[bytes, bool]:
        """The opening comment and every unacked message (up to the byte budget); the stream stays
        open (as the socket's receiver) unless that already ended it."""
        first = sse.opening(self.pad)
        sock = self.sock
        sock.metrics.streams_total.value += 1  # every answer started, also one that ends at once
        if sock.state is FREED:  # e.g. its close was acked by this very request
            return first, False
        sock.take_receiver(self, sink)
        data, done = self._pending()
        if done:
            sock.release_receiver(self)
            return first + data, False
        self.sink = sink
        self.timer = self.loop.call_at(self.next_due(), self._tick)
        sock.metrics.streams_open.value += 1
        return first + data, True

    def stop(self) -> None:
        self.end()

    def lost(self) -> None:
        self._detach()

    # driven by the socket

    def wake(self) -> None:
        """The socket queued a message, closed or was freed: write what is new, end if done.
        Called from the socket's upstream reader, which must not fail for a client's connection."""
        sink = self.sink
        if sink is None:
            return
        try:
            data, done = self._pending()
            if data:
                sink.write_chunk(data)
            if done:
                self.end()
        except Exception:
            log.exception("socket %s: stream write failed", self.sock.id[:8])
            self._detach()  # the client resumes from its ack: nothing is lost
            with contextlib.suppress(Exception):
                sink.end_stream()

    def end(self) -> None:
        """End the stream (terminal chunk); the connection goes on with its next request."""
        sink = self.sink
        self._detach()
        if sink is not None:
            sink.end_stream()

    def replaced(self) -> None:
        """A newer /stream or a /poll took the socket over (rare: no alias, which mypyc refuses)."""
        self.end()

    def _pending(self) -> tuple[bytes, bool]:
        """Events not yet written on this stream, and whether the stream ends after them."""
        sock = self.sock
        state = sock.state
        if state is FREED:
            return b"", True
        out = sock.outbound
        data, self.cursor = sse.next_events(out, self.cursor, self.max_bytes - self.written)
        if not data:
            return b"", False
        over = self.wrote_events(len(data), self.loop.time())
        return data, over or (state is CLOSED and self.cursor >= out.last_seq)  # the close message ends it

    def _detach(self) -> None:
        if self.sink is None:
            return
        self.sink = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.sock.release_receiver(self)
        self.sock.metrics.streams_open.value -= 1

    def _tick(self) -> None:
        self.timer = None
        sink = self.sink
        if sink is None:
            return
        what = self.tick(self.loop.time())
        if what is sse.Tick.END:
            self.end()
            return
        if what is sse.Tick.HEARTBEAT:
            sink.write_chunk(sse.HEARTBEAT)
        self.timer = self.loop.call_at(self.next_due(), self._tick)
