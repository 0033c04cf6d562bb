"""A minimal ``GET /stream`` client over a raw asyncio connection, for tests: it reads the chunked
text/event-stream body as a browser's EventSource would, and exposes what a test needs to check
(every event with its id, comments, where the body ended, whether a chunk was cut)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson


class StreamEnded(Exception):
    """The body ended (terminal chunk) or the connection closed."""


@dataclass
class Item:
    kind: str  # "event" or "comment"
    text: str = ""  # a comment's text
    id: int = -1
    data: dict[str, Any] = field(default_factory=dict)


class SSEStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.raw_head = b""
        self.body = b""  # decoded (de-chunked) body bytes not yet parsed into items
        self.complete = False  # the terminal chunk arrived
        self.cut = False  # the connection closed before the terminal chunk
        self.partial_at_cut = b""  # body bytes of an unfinished item when the connection was cut
        self.chunk_left = 0  # bytes of the current chunk not read yet

    @classmethod
    async def open(cls, host: str, port: int, fqdn: str, params: dict[str, Any],
                   headers: dict[str, str] | None = None, path: str = "/stream") -> SSEStream:
        reader, writer = await asyncio.open_connection(host, port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"GET {path}?{urlencode(params)} HTTP/1.1\r\nHost: {fqdn}\r\n{extra}\r\n".encode())
        s = cls(reader, writer)
        await s.read_head()
        return s

    async def read_head(self) -> None:
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.raw_head = head
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()

    async def read_json_body(self) -> dict[str, Any]:
        """The body of a non-stream (error) answer."""
        size = int(self.headers["content-length"])
        return dict(orjson.loads(await self.reader.readexactly(size)))

    async def _read_chunk(self) -> bool:
        """More body bytes (as they arrive, as a browser parses them: a chunk need not be whole);
        False at the end of the stream."""
        if self.complete or self.cut:
            return False
        reader = self.reader
        try:
            if self.chunk_left == 0:
                line = await reader.readuntil(b"\r\n")
                size = int(line[:-2], 16)
                if size == 0:
                    await reader.readexactly(2)
                    self.complete = True
                    return False
                self.chunk_left = size
            data = await reader.read(self.chunk_left)
            if not data:
                return self._was_cut()
            self.body += data
            self.chunk_left -= len(data)
            if self.chunk_left == 0:
                await reader.readexactly(2)  # the CRLF after the chunk's data
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return self._was_cut()
        return True

    def _was_cut(self) -> bool:
        self.cut = True
        self.partial_at_cut = self.body
        return False

    async def next(self, timeout: float = 10) -> Item:
        """The next event or comment; ``StreamEnded`` at the end of the body or connection."""
        while b"\n\n" not in self.body:
            if not await asyncio.wait_for(self._read_chunk(), timeout):
                raise StreamEnded
        block, _, self.body = self.body.partition(b"\n\n")
        if block.startswith(b":"):
            return Item("comment", text=block[1:].decode())
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n"))
        return Item("event", id=int(fields[b"id"]), data=dict(orjson.loads(fields[b"data"])))

    async def events(self, n: int, timeout: float = 10) -> list[Item]:
        """The next ``n`` events (comments skipped)."""
        out: list[Item] = []
        while len(out) < n:
            item = await self.next(timeout)
            if item.kind == "event":
                out.append(item)
        return out

    async def rest(self, timeout: float = 10) -> list[Item]:
        """Every item until the body ends."""
        out: list[Item] = []
        try:
            while True:
                out.append(await self.next(timeout))
        except StreamEnded:
            return out

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
