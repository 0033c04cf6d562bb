"""An incremental ``text/event-stream`` parser, for the bench's streaming client (pure, no I/O).

The relay's ``GET /stream`` writes events as ``id: <seq>`` / ``data: <json>`` / blank line and
comments (``:ok``, ``:hb``, the 2 KiB ``pad=1`` prelude). Bytes arrive in arbitrary pieces, so a
line, or an event, may be split across ``feed`` calls; the parser keeps the incomplete tail.
Lines end in LF or CRLF (a lone CR as line end, which the format also allows, is not used by the
relay and not handled here).
"""

from __future__ import annotations


class SseParser:
    """Feed bytes, get back the complete events (``(id, data)``) and comments seen so far."""

    __slots__ = ("_buf", "_data", "last_id")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] | None = None
        self.last_id: bytes | None = None  # as EventSource keeps it: the last ``id:`` seen

    def feed(self, chunk: bytes) -> tuple[list[tuple[bytes | None, bytes]], list[bytes]]:
        """Parse ``chunk``; return the events it completed and the comment lines it held."""
        buf = self._buf + chunk if self._buf else chunk
        events: list[tuple[bytes | None, bytes]] = []
        comments: list[bytes] = []
        start = 0
        find = buf.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # blank line: dispatch the event, if it had data
                if self._data is not None:
                    events.append((self.last_id, b"\n".join(self._data)))
                    self._data = None
                continue
            if line[0] == 0x3A:  # ":" comment
                comments.append(line[1:])
                continue
            name, sep, value = line.partition(b":")
            if sep and value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                if self._data is None:
                    self._data = [value]
                else:
                    self._data.append(value)
            elif name == b"id" and b"\0" not in value:
                self.last_id = value
            # "event", "retry" and unknown fields: not used by the relay, ignored as the format says
        self._buf = buf[start:]
        return events, comments

    @property
    def pending(self) -> int:
        """Bytes held back: an incomplete line."""
        return len(self._buf)
