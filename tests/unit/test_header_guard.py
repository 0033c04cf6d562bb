"""D7: the router's HTTP server cuts silent and trickling clients and oversized heads.

A real uvicorn (httptools protocol, as `polysocket router` runs it) on loopback serves the real
router app; raw sockets play the slow clients. The first test pins the uvicorn behaviour that
makes the guard necessary.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from polysocket_cli.processes import free_port, wait_port
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.wire import ConnectParams
from router_fn.admission import Admitted, ConnectContext
from router_fn.app import create_app
from router_fn.header_guard import guard_http_protocol
from router_fn.settings import RouterSettings

TIMEOUT = 0.6


class SlowRefusal:
    """An admission that takes longer than the head deadline: the app's time is never cut."""

    async def admit(self, params: ConnectParams, ctx: ConnectContext) -> Admitted:
        await asyncio.sleep(TIMEOUT * 2)
        raise PolysocketError(ErrorCode.UNAUTHORIZED, "slow no")


def serve(http: Any) -> Iterator[int]:
    app = create_app(RouterSettings(redis_url="redis://127.0.0.1:1/0"), SlowRefusal())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           http=http, timeout_keep_alive=5, proxy_headers=False))
    # uvloop, as `polysocket router` runs it (its transports are not asyncio.Transport subclasses)
    thread = threading.Thread(target=lambda: uvloop.run(server.serve()), daemon=True)
    thread.start()
    wait_port(port)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def guarded() -> Iterator[int]:
    yield from serve(guard_http_protocol(HttpToolsProtocol, header_timeout_s=TIMEOUT, max_head_bytes=8192))


@pytest.fixture(scope="module")
def plain() -> Iterator[int]:
    yield from serve("httptools")


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float | None:
    """Seconds until the server closed the connection (reading to EOF), or None if still open."""
    start = time.monotonic()
    try:
        await asyncio.wait_for(reader.read(), limit)
    except TimeoutError:
        return None
    return time.monotonic() - start


async def trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, seconds: float) -> bool:
    """Send a never-ending header a byte at a time; True if the server closed the connection."""
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            writer.write(b"a")
            await writer.drain()
        except ConnectionError:
            return True
        if reader.at_eof():
            return True
        try:
            await asyncio.wait_for(reader.read(1), 0.1)
        except TimeoutError:
            continue
        if reader.at_eof():
            return True
    return False


async def test_plain_uvicorn_keeps_silent_and_trickling_clients(plain: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", plain)
    assert await closed_after(reader, TIMEOUT * 3) is None  # silent: never cut
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", plain)
    assert await trickle(writer, reader, TIMEOUT * 3) is False  # trickling: never cut
    writer.close()


async def test_silent_client_is_cut(guarded: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded)
    took = await closed_after(reader, TIMEOUT * 5)
    assert took is not None and took < TIMEOUT * 3
    writer.close()


async def test_trickling_client_is_cut(guarded: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded)
    assert await trickle(writer, reader, TIMEOUT * 5) is True
    writer.close()


@pytest.mark.parametrize("end", [b"", b"\r\n\r\n"], ids=["still-arriving", "complete-in-one-read"])
async def test_oversized_head_is_431_payload_too_large(guarded: int, end: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 9000 + end)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"\r\nconnection: close\r\n" in answer
    assert answer.endswith(b'{"ok":false,"error":"payload_too_large","message":"request head over 8192 bytes"}')
    writer.close()


async def test_keep_alive_requests_and_slow_app_are_not_cut(guarded: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded)
    # Split heads (the blank line across chunks), two pipelined, then a request the app takes
    # twice the head deadline to answer: all answered on one connection.
    for chunk in (b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r", b"\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
                  b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"):
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.05)
    for _ in range(3):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
    await asyncio.sleep(TIMEOUT * 1.5)  # idle between requests: uvicorn's keep-alive (5 s) governs
    writer.write(b"GET /connect?from=t&target=ws%3A%2F%2F127.0.0.1%3A9%2F HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 401 ")
    writer.close()
