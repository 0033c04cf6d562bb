"""A minimal HTTP/1.1 client over one keep-alive connection (asyncio streams), for tests that
drive hundreds of sockets at once or send bytes no HTTP library would: httpx spends ~100x the
relay's CPU per request at that scale on two shared cores."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import orjson


class RawHTTP:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        return self._streams

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def request(self, method: str, target: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request; (status, lower-cased headers, body). Raises ConnectionError if the
        connection is refused or closed without an answer."""
        reader, writer = await self._open()
        lines = [f"{method} {target} HTTP/1.1", f"host: {self.host}", f"content-length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            answer_headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                answer_headers[name.strip().lower()] = value.strip()
            status = int(status_line.split(" ", 2)[1])
            bodyless = method == "HEAD" or status in (204, 304) or 100 <= status < 200
            if bodyless:
                payload = b""
            elif answer_headers.get("transfer-encoding", "").lower() == "chunked":  # a /stream answer
                payload = await read_chunked(reader)
            else:
                payload = await reader.readexactly(int(answer_headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise ConnectionError("connection closed without an answer") from exc
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer_headers, payload

    async def call(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        _, _, payload = await self.request("GET", f"{path}?{urlencode(params)}")
        return dict(orjson.loads(payload))


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body to its terminal chunk (no trailers: the relay sends none)."""
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        data = await reader.readexactly(size + 2)
        if data[-2:] != b"\r\n":
            raise ConnectionError("malformed chunk")
        if size == 0:
            return b"".join(parts)
        parts.append(data[:-2])
