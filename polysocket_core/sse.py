"""The ``GET /stream`` body (docs/protocol.md): text/event-stream framing and a stream's budgets.

Pure: bytes in, bytes out, and the clock is passed in (as in ``sequencing``), so the relay's
stream (``relay_node.sockets.stream``) only moves bytes and arms one timer.

A message is the JSON fragment a poll answer carries, already encoded once by the relay; an event
adds ``id: <seq>`` so EventSource reports it as ``Last-Event-ID`` when it reconnects. Fragments
never hold a raw CR or LF (JSON escapes them), so one ``data:`` line always suffices.
"""

from __future__ import annotations

import enum

from .sequencing import OutboundBuffer

OPENING = b":ok\n\n"
PRELUDE_SIZE = 2048
# Old IE's XHR (readyState 3) and XDomainRequest (onprogress) report nothing before ~2 KiB arrived.
PRELUDE = b":" + b" " * PRELUDE_SIZE + b"\n\n"
HEARTBEAT = b":hb\n\n"

DEFAULT_STREAM_BYTES = 128 * 1024  # SockJS's response_limit: a proxy that buffers holds at most this
DEFAULT_STREAM_SECONDS = 120.0


def opening(pad: bool) -> bytes:
    """What a stream starts with, written at once: a client tells a live stream from a buffering
    proxy by its first byte."""
    return PRELUDE if pad else OPENING


def event(seq: int, fragment: bytes) -> bytes:
    """One message as an event; ``fragment`` is the message's JSON (``{"seq":..,"type":..}``)."""
    return b"id: %d\ndata: %b\n\n" % (seq, fragment)


def events(items: list[tuple[int, bytes]]) -> bytes:
    """Several messages, oldest first, as one piece of body."""
    return b"".join([b"id: %d\ndata: %b\n\n" % item for item in items])


def events_within(items: list[tuple[int, bytes]], budget: int) -> tuple[bytes, int]:
    """Events for ``items``, oldest first, up to the one that takes their bytes past ``budget``
    (that one included, and always at least one), and how many that is. The budget counts event
    bytes: for small messages the ``id``/``data`` framing is a large share of them."""
    data = events(items)
    if len(data) <= budget or len(items) == 1:
        return data, len(items)
    size = 0
    for n, (seq, fragment) in enumerate(items, 1):
        size += len(b"id: %d\ndata: \n\n" % seq) + len(fragment)
        if size > budget:
            return data[:size], n
    return data, len(items)  # not reached: the whole is past the budget


def next_events(out: OutboundBuffer, cursor: int, budget: int) -> tuple[bytes, int]:
    """What a stream that wrote every seq up to ``cursor`` writes next with ``budget`` bytes left:
    the events of the unacknowledged messages after it (see ``events_within``), and the new cursor."""
    items = out.after(cursor, budget)  # fragment bytes: at least every event that fits
    if not items:
        return b"", cursor
    data, n = events_within(items, budget)
    return data, items[n - 1][0]


class Tick(enum.Enum):
    """What a stream does when its timer fires."""

    END = "end"  # the time budget is spent
    HEARTBEAT = "heartbeat"  # nothing was written for a heartbeat interval
    WAIT = "wait"  # something was written meanwhile: nothing to do yet


class StreamClock:
    """A stream's budgets and heartbeat: bytes of events written against ``max_bytes``, time since
    the start against ``max_seconds``, time since the last write against ``heartbeat_s``.

    One timer per stream, armed at ``next_due()`` and asked ``tick(now)`` when it fires: a message
    written costs no timer re-arm, only a timestamp. Subclassed by the relay's stream (one object
    per stream, no second allocation)."""

    __slots__ = ("deadline", "heartbeat_s", "last_write", "max_bytes", "written")

    def __init__(self, now: float, heartbeat_s: float, max_bytes: int, max_seconds: float) -> None:
        self.heartbeat_s = heartbeat_s
        self.max_bytes = max_bytes
        self.deadline = now + max_seconds
        self.last_write = now
        self.written = 0

    def wrote_events(self, size: int, now: float) -> bool:
        """Record ``size`` bytes of events written; True when the byte budget is spent (the stream
        ends after the message that crossed it)."""
        self.written += size
        self.last_write = now
        return self.written > self.max_bytes

    def over_budget(self) -> bool:
        return self.written > self.max_bytes

    def tick(self, now: float) -> Tick:
        if now >= self.deadline:
            return Tick.END
        if now - self.last_write >= self.heartbeat_s:
            self.last_write = now
            # A heartbeat counts in the byte budget like an event: the bytes a stream can leave
            # queued for a client that reads nothing are then bounded whatever the heartbeat interval.
            self.written += len(HEARTBEAT)
            return Tick.END if self.written > self.max_bytes else Tick.HEARTBEAT
        return Tick.WAIT

    def next_due(self) -> float:
        """When the timer should fire next (same clock as ``now``)."""
        return min(self.last_write + self.heartbeat_s, self.deadline)
