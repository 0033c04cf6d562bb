"""Streamed answers of relay_node.edge.http1 (what ``GET /stream`` rides on), over the transport double of
tests/support/http1.py: chunked framing, the connection after a stream, pipelining behind it, the
keep-alive timer, disconnects, half-close, shutdown and HTTP/1.0."""

from __future__ import annotations

import asyncio

from polysocket_cli.processes import free_port
from relay_node.edge.http1 import Connections, Limits, RelayHTTPProtocol
from tests.support.http1 import GET, STREAM_REQ, Streams, body_after_head, make, settle


async def test_headers_and_first_chunk_at_once_then_chunks_then_the_terminal_chunk() -> None:
    ans = Streams()
    proto, tr, _, conns = make(ans)
    proto.data_received(STREAM_REQ)
    await settle()
    head = tr.buffer.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
    assert b"content-length" not in head and b"connection: close" not in head
    assert body_after_head(tr) == b"5\r\n:ok\n\n\r\n"
    assert not conns.tasks  # no task holds an open stream
    sink = ans.streams[0].sink
    assert sink is not None
    sink.write_chunk(b"id: 0\ndata: {}\n\n")
    sink.write_chunk(b"")  # nothing to write: no empty chunk (that would end the body)
    sink.end_stream()
    assert body_after_head(tr) == b"5\r\n:ok\n\n\r\n10\r\nid: 0\ndata: {}\n\n\r\n0\r\n\r\n"
    sink.write_chunk(b"late")  # after the end: ignored
    sink.end_stream()
    assert tr.buffer.endswith(b"0\r\n\r\n") and not tr.closed
    proto.data_received(GET)  # the connection is usable again
    await settle()
    assert tr.statuses() == [200, 200]


async def test_a_stream_that_ends_at_once_is_one_write_and_the_connection_goes_on() -> None:
    proto, tr, _, _ = make(Streams(first=b":ok\n\nid: 0\ndata: {}\n\n", more=False))
    proto.data_received(STREAM_REQ + GET)
    await settle()
    assert tr.statuses() == [200, 200]
    first = tr.buffer.split(b"HTTP/1.1 200", 2)[1]
    assert first.endswith(b"\r\n0\r\n\r\n") and not tr.closed


async def test_pipelined_requests_wait_behind_a_stream() -> None:
    ans = Streams()
    proto, tr, _, _ = make(ans)
    proto.data_received(STREAM_REQ + GET + GET)
    await settle()
    assert tr.statuses() == [200]
    sink = ans.streams[0].sink
    assert sink is not None
    sink.end_stream()
    await settle()
    assert tr.statuses() == [200, 200, 200]
    assert tr.buffer.index(b"0\r\n\r\n") < tr.buffer.index(b"HTTP/1.1 200", 10)


async def test_the_keep_alive_timeout_does_not_cut_an_open_stream() -> None:
    ans = Streams()
    proto, tr, _, _ = make(ans, keep_alive_s=0.01)
    proto.data_received(STREAM_REQ)
    await asyncio.sleep(0.05)
    assert not tr.closed
    sink = ans.streams[0].sink
    assert sink is not None
    sink.end_stream()
    await asyncio.sleep(0.05)  # idle after the stream: the keep-alive timeout applies again
    assert tr.closed


async def test_connection_lost_mid_stream_tells_the_owner_and_keeps_nothing() -> None:
    ans = Streams()
    proto, _, _, conns = make(ans)
    proto.data_received(STREAM_REQ)
    await settle()
    proto.connection_lost(ConnectionResetError())
    s = ans.streams[0]
    assert s.was_lost and s.sink is None and proto.stream is None
    assert proto not in conns.open and not conns.tasks


async def test_half_close_ends_the_stream_then_the_connection() -> None:
    ans = Streams()
    proto, tr, _, _ = make(ans)
    proto.data_received(STREAM_REQ)
    await settle()
    assert proto.eof_received() is True
    assert ans.streams[0].stops == 1
    assert tr.buffer.endswith(b"0\r\n\r\n") and tr.closed


async def test_graceful_shutdown_ends_open_streams() -> None:
    ans = Streams()
    proto, tr, _, conns = make(ans)
    proto.data_received(STREAM_REQ + GET)
    await settle()
    conns.shutdown()
    assert ans.streams[0].stops == 1
    assert tr.buffer.endswith(b"0\r\n\r\n") and tr.closed and tr.statuses() == [200]


async def test_connection_close_request_is_honoured_after_the_stream() -> None:
    ans = Streams()
    proto, tr, _, _ = make(ans)
    proto.data_received(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await settle()
    assert b"connection: close" in tr.buffer.split(b"\r\n\r\n", 1)[0] and not tr.closed
    sink = ans.streams[0].sink
    assert sink is not None
    sink.end_stream()
    assert tr.closed


async def test_http10_gets_a_raw_body_ended_by_the_close() -> None:
    ans = Streams()
    proto, tr, _, _ = make(ans)
    proto.data_received(b"GET /stream HTTP/1.0\r\n\r\n")
    await settle()
    head, body = tr.buffer.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head and b"connection: close" in head and body == b":ok\n\n"
    sink = ans.streams[0].sink
    assert sink is not None
    sink.write_chunk(b"id: 1\ndata: {}\n\n")
    sink.end_stream()
    assert body_after_head(tr) == b":ok\n\nid: 1\ndata: {}\n\n" and tr.closed


async def test_a_client_that_never_reads_its_stream_does_not_hold_the_connection_forever() -> None:
    # Over a real loopback connection: the client asks for a stream and reads nothing. Its answer
    # fills the kernel's buffers and then the transport's (write paused). Once the stream ended,
    # the keep-alive timeout still applies, and a close that cannot flush becomes an abort:
    # before, the connection and the bytes it queued were held for as long as the client stayed.
    import socket

    ans = Streams()
    conns = Connections()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RelayHTTPProtocol(ans, Limits(keep_alive_s=0.2), conns),
                                      "127.0.0.1", free_port())
    port = server.sockets[0].getsockname()[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, ("127.0.0.1", port))
        await loop.sock_sendall(client, STREAM_REQ + GET)  # and a request pipelined behind it
        for _ in range(200):
            if ans.streams and ans.streams[0].sink is not None:
                break
            await asyncio.sleep(0.01)
        (proto,) = conns.open
        sink = ans.streams[0].sink
        assert sink is not None
        for _ in range(64):
            sink.write_chunk(b"x" * 65536)  # 4 MiB the client never reads
        assert proto.write_paused
        sink.end_stream()
        for _ in range(300):  # bounded wait for the relay to let go of the connection
            if not conns.open:
                break
            await asyncio.sleep(0.02)
        assert not conns.open and proto.transport is None
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_a_refusal_behind_an_open_stream_ends_it_then_follows_it() -> None:
    """A malformed request behind an open stream: the stream ends (terminal chunk), the refusal
    comes after it, then the connection closes; the stream's answer is not cut off by it."""
    ans = Streams()
    proto, tr, _, _ = make(ans)
    proto.data_received(STREAM_REQ)
    await settle()
    proto.data_received(b"GARBAGE\r\n\r\n")
    await settle()
    stream = ans.streams[0]
    assert stream.stops == 1 and tr.closed
    assert tr.statuses() == [200, 400]
    assert b"0\r\n\r\nHTTP/1.1 400 " in tr.buffer  # the stream's end, then the refusal
