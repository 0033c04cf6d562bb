"""A minimal HTTP/1.1 keep-alive client on a raw asyncio protocol, parsed with httptools.

The load generator must cost far less CPU per request than the servers it measures, so it skips
every client library: one connection is one protocol object with one request in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httptools


class HttpConn(asyncio.Protocol):
    __slots__ = ("_body", "_parser", "_sink", "_status", "_waiter", "host", "transport")

    def __init__(self, host: str) -> None:
        self.host = host.encode()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._status = 0
        # set by ``stream()``: a 200 answer's body goes here, chunk by chunk, as it arrives
        self._sink: Callable[[bytes], None] | None = None

    @classmethod
    async def open(cls, port: int, host: str) -> HttpConn:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(host), "127.0.0.1", port)
        return proto

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionError(f"connection lost: {exc}"))

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is not None and self._status == 200:
            sink(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        self._body = []
        self._sink = None
        w = self._waiter
        self._waiter = None
        if w is not None and not w.done():
            w.set_result((self._status, body))

    # requests

    def request(self, method: bytes, target: bytes, body: bytes | None = None,
                content_type: bytes = b"text/plain;charset=UTF-8") -> asyncio.Future[tuple[int, bytes]]:
        if self.transport is None:
            raise ConnectionError("not connected")
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = fut
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, self.host)
        if body is None:
            self.transport.write(head + b"\r\n")
        else:
            self.transport.write(head + b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                                 % (content_type, len(body)) + body)
        return fut

    def get(self, target: bytes) -> asyncio.Future[tuple[int, bytes]]:
        return self.request(b"GET", target)

    def post(self, target: bytes, body: bytes) -> asyncio.Future[tuple[int, bytes]]:
        return self.request(b"POST", target, body)

    def stream(self, target: bytes, sink: Callable[[bytes], None]) -> asyncio.Future[tuple[int, bytes]]:
        """GET a long response (an event stream): a 200 body goes to ``sink`` as it arrives.

        The future completes when the response ends, with the status and, for any status but 200,
        the body (an error answer); for 200 the body is empty (it all went to ``sink``).
        """
        fut = self.request(b"GET", target)
        self._sink = sink
        return fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
