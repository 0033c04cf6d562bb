"""Exactly-once, in-order delivery over unreliable HTTP requests, both directions.

``InboundSequencer`` orders the client's sends by their ``seq`` (dropping retries, holding early
arrivals, joining ``fin=0`` chunks). ``OutboundBuffer`` numbers the target's messages and keeps
each one until the client acknowledges it, so a poll answer lost on the way is simply sent again.
Both are pure: the caller supplies the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ErrorCode, PolysocketError


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str  # "t" or "b"
    data: bytes
    seq: int = field(default=-1, compare=False)  # the seq of the send that completed it (its last chunk)


class InboundSequencer:
    """Turns ``(seq, kind, fin, data)`` sends, in any order and possibly repeated, into frames in order."""

    __slots__ = ("_held", "_held_bytes", "_partial", "_partial_kind", "_partial_size", "expected",
                 "gap_since", "max_ahead", "max_held_bytes", "max_message")

    def __init__(self, max_message: int, max_ahead: int = 1024, max_held_bytes: int | None = None) -> None:
        self.expected = 0
        self.max_message = max_message
        self.max_ahead = max_ahead
        self.max_held_bytes = max_held_bytes if max_held_bytes is not None else 2 * max_message
        self.gap_since: float | None = None
        self._held: dict[int, tuple[str, bool, bytes]] = {}
        self._held_bytes = 0
        self._partial: list[bytes] = []
        self._partial_kind = ""
        self._partial_size = 0

    def is_duplicate(self, seq: int) -> bool:
        return seq < self.expected or seq in self._held

    def accept(self, seq: int, kind: str, fin: bool, data: bytes, now: float) -> list[Frame]:
        """Record one send; return the frames that became complete and deliverable, in order."""
        if seq == self.expected and fin and not self._held and not self._partial:
            # the common case, a whole message in order with nothing held: the general path's result
            self.expected = seq + 1
            if len(data) > self.max_message:
                raise PolysocketError(
                    ErrorCode.PAYLOAD_TOO_LARGE, f"message is larger than {self.max_message} bytes"
                )
            self.gap_since = None
            return [Frame(kind, data, seq)]
        if self.is_duplicate(seq):
            return []
        if seq - self.expected >= self.max_ahead:
            raise PolysocketError(
                ErrorCode.SEQUENCE_GAP,
                f"seq {seq} is too far ahead of the next expected seq {self.expected}",
            )
        if seq != self.expected:
            if self._held_bytes + len(data) > self.max_held_bytes:
                raise PolysocketError(ErrorCode.PAYLOAD_TOO_LARGE, "too much out-of-order data held")
            self._held[seq] = (kind, fin, data)
            self._held_bytes += len(data)
            if self.gap_since is None:
                self.gap_since = now
            return []
        frames: list[Frame] = []
        self._take(kind, fin, data, frames)
        while self.expected in self._held:
            k, f, d = self._held.pop(self.expected)
            self._held_bytes -= len(d)
            self._take(k, f, d, frames)
        self.gap_since = now if self._held else None
        return frames

    def _take(self, kind: str, fin: bool, data: bytes, out: list[Frame]) -> None:
        """Consume the next send in order. An error here leaves the stream unusable (frames released
        earlier in the same ``accept`` are lost with it): the owner must fail the socket."""
        if self._partial_kind and kind != self._partial_kind:
            raise PolysocketError(ErrorCode.BAD_REQUEST, "continuation chunk changes the frame type")
        self.expected += 1
        size = self._partial_size + len(data)
        if size > self.max_message:
            raise PolysocketError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"message is larger than {self.max_message} bytes"
            )
        if fin:
            payload = b"".join((*self._partial, data)) if self._partial else data
            self._partial = []
            self._partial_kind = ""
            self._partial_size = 0
            out.append(Frame(kind, payload, self.expected - 1))
        else:
            self._partial.append(data)
            self._partial_kind = kind
            self._partial_size = size

    def gap_expired(self, now: float, hold_seconds: float) -> bool:
        return self.gap_since is not None and now - self.gap_since > hold_seconds

    @property
    def missing_seq(self) -> int:
        return self.expected


class OutboundBuffer:
    """Numbered, pre-encoded messages for the client, kept until acknowledged.

    Messages are stored as JSON fragments, encoded once; a poll answer is their concatenation.
    ``unacked_bytes`` drives back-pressure: the owner stops reading upstream above a bound.
    """

    __slots__ = ("_head", "_items", "next_seq", "unacked_bytes")

    # A list with a moving head rather than a deque: an empty deque costs ~700 bytes per socket,
    # an empty list 56, and an idle socket holds nothing.

    def __init__(self) -> None:
        self.next_seq = 0
        self._items: list[tuple[int, bytes]] = []  # perf: list-not-deque
        self._head = 0  # items before it are acknowledged
        self.unacked_bytes = 0

    def push(self, fragment: bytes) -> None:
        """Append a message already encoded with ``seq == self.next_seq``."""
        self._items.append((self.next_seq, fragment))
        self.next_seq += 1
        self.unacked_bytes += len(fragment)

    def ack(self, upto: int) -> None:
        """Forget every message with ``seq <= upto``. An ack above the last seq ever queued is
        refused (``bad_request``), changing nothing: no receiver can have delivered that message,
        and accepting it would free messages the client never got."""
        if upto >= self.next_seq:
            raise PolysocketError(ErrorCode.BAD_REQUEST, f"ack {upto} is above the last message seq "
                                  f"{self.next_seq - 1}")
        items = self._items
        i, n = self._head, len(items)
        while i < n and items[i][0] <= upto:
            self.unacked_bytes -= len(items[i][1])
            i += 1
        if i == n:
            items.clear()
            i = 0
        elif i > 32 and 2 * i > n:
            del items[:i]
            i = 0
        self._head = i

    def __len__(self) -> int:
        return len(self._items) - self._head

    def take(self, max_bytes: int) -> list[bytes]:
        """Fragments to deliver now (all unacked, oldest first, at least one, about ``max_bytes`` in all)."""
        out: list[bytes] = []
        size = 0
        items = self._items
        for i in range(self._head, len(items)):
            fragment = items[i][1]
            if out and size + len(fragment) > max_bytes:
                break
            out.append(fragment)
            size += len(fragment)
        return out

    def after(self, seq: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Unacked messages with a seq above ``seq``, oldest first, until one takes their size past
        ``max_bytes`` (that one included): what a stream writes next."""
        items = self._items
        head = self._head
        if head == len(items):
            return []
        start = max(head, head + seq + 1 - items[head][0])  # seqs in the buffer are consecutive
        out: list[tuple[int, bytes]] = []
        size = 0
        for i in range(start, len(items)):
            item = items[i]
            out.append(item)
            size += len(item[1])
            if size > max_bytes:
                break
        return out

    @property
    def last_seq(self) -> int:
        return self._items[-1][0] if len(self._items) > self._head else -1


POLL_PREFIX = b'{"ok":true,"messages":['
POLL_SUFFIX = b"]}"
HEARTBEAT_ANSWER = b'{"ok":true,"messages":[{"type":"heartbeat"}]}'


def poll_answer(fragments: list[bytes]) -> bytes:
    """The JSON body of a poll answer; a heartbeat when there is nothing to deliver."""
    if not fragments:
        return HEARTBEAT_ANSWER
    return POLL_PREFIX + b",".join(fragments) + POLL_SUFFIX
