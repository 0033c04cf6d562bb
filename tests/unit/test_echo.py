"""The ``polysocket echo`` target in process, against websockets' own client: what the relay's tests
and the bench rely on (echo, commands, subprotocol, protocol checks)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from polysocket_cli.echo import EchoLimits, EchoProtocol, EchoServer, connection_limit, run_echo
from polysocket_cli.processes import free_port


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(run_echo("127.0.0.1", port, ready))
    await asyncio.wait_for(ready.wait(), 5)
    yield f"ws://127.0.0.1:{port}/"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_text_binary_and_fragmented_messages_come_back_whole(echo_url: str) -> None:
    async with connect(echo_url, compression=None, max_size=None) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xff" * 100)
        assert await ws.recv() == b"\x00\xff" * 100
        await ws.send(["frag", "mented"])  # one message in three frames
        assert await ws.recv() == "fragmented"
        big = b"z" * (2 * 1024 * 1024)
        await ws.send(big)
        assert await ws.recv() == big


async def test_a_flood_comes_before_the_echo_of_what_followed_it(echo_url: str) -> None:
    async with connect(echo_url, compression=None, max_queue=None) as ws:
        await ws.send("flood:3000")
        await ws.send("after")
        got = [await ws.recv() for _ in range(3001)]
        assert got == [str(i) for i in range(3000)] + ["after"]


async def test_close_command_closes_with_its_code_and_reason(echo_url: str) -> None:
    async with connect(echo_url, compression=None) as ws:
        await ws.send("close:4001:bye now")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4001 and ws.close_reason == "bye now"


async def test_abort_drops_the_connection_without_a_close_frame(echo_url: str) -> None:
    async with connect(echo_url, compression=None) as ws:
        await ws.send("abort")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1006


async def test_the_first_offered_subprotocol_is_accepted(echo_url: str) -> None:
    async with connect(echo_url, subprotocols=["chat.v2", "chat.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v2"
        assert ws.response is not None and "Sec-WebSocket-Extensions" not in ws.response.headers


async def test_text_that_is_not_utf8_fails_the_connection_1007(echo_url: str) -> None:
    async with connect(echo_url, compression=None) as ws:
        ws.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe"))  # what send() would refuse to build
        ws.send_data()
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1007


async def test_a_client_that_sends_without_reading_does_not_grow_the_echos_write_buffer() -> None:
    """Reading pauses while the client does not read its echoes: the bytes held for it stay near
    the transport's high-water mark instead of growing by every message it sends."""
    loop = asyncio.get_running_loop()
    made: list[EchoProtocol] = []

    def factory() -> EchoProtocol:
        made.append(EchoProtocol())
        return made[-1]

    server = await loop.create_server(factory, "127.0.0.1", free_port())
    port = server.sockets[0].getsockname()[1]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the client reads nothing
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"))
    client.send_request(client.connect())
    await loop.sock_sendall(sock, client.data_to_send()[0])
    client.receive_data(await loop.sock_recv(sock, 65536))
    assert client.state is State.OPEN

    async def send_all() -> None:
        for _ in range(200):  # 12.5 MiB to echo
            client.send_binary(b"x" * 65536)
            for data in client.data_to_send():
                await loop.sock_sendall(sock, data)

    sender = asyncio.create_task(send_all())
    try:
        await asyncio.wait([sender], timeout=2)  # done (the echo read it all: the bug) or blocked
        transport = made[0].transport
        assert transport is not None
        assert transport.get_write_buffer_size() < 1024 * 1024
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        sock.close()
        server.close()
        await server.wait_closed()


# Misbehaving clients (issue 21, D4): the handshake deadline, the assembly bound, the connection limit.


@contextlib.asynccontextmanager
async def echo_with(limits: EchoLimits) -> AsyncIterator[tuple[str, int, EchoServer]]:
    shared = EchoServer(limits)
    server = await asyncio.get_running_loop().create_server(shared.protocol, "127.0.0.1", free_port())
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/", port, shared
    finally:
        server.close()
        for conn in list(shared.open):
            conn.drop()
        await server.wait_closed()


async def until(cond: Callable[[], bool]) -> None:
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never met")


HALF_HANDSHAKE = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"  # never finished


async def half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HALF_HANDSHAKE)
    await writer.drain()
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the echo wrote before it closed (or reset) the connection; the bound is not a timing claim."""
    try:
        return await asyncio.wait_for(reader.read(), 20)
    except ConnectionResetError:
        return b""


async def dropped(reader: asyncio.StreamReader) -> bool:
    """Closed without a word: what a half-open connection gets."""
    return await until_closed(reader) == b""


async def test_an_unfinished_opening_handshake_is_dropped_at_its_deadline() -> None:
    async with echo_with(EchoLimits(handshake_s=0.3)) as (url, port, shared):
        reader, writer = await half_open(port)
        assert await dropped(reader)  # before: open for good
        writer.close()
        assert not shared.open and not shared.unfinished
        async with connect(url, compression=None) as ws:  # a real client's handshake is not cut
            await asyncio.sleep(0.6)
            await ws.send("still here")
            assert await ws.recv() == "still here"


async def test_over_the_connection_limit_the_oldest_unfinished_handshakes_go_first() -> None:
    async with echo_with(EchoLimits(max_connections=5)) as (url, port, shared), \
            connect(url, compression=None) as real:
        halves = [await half_open(port) for _ in range(8)]  # 1 real + 8 half-open > 5
        assert all([await dropped(r) for r, _ in halves[:4]])  # the oldest four made room
        async with connect(url, compression=None) as newcomer:  # room for a real client
            await newcomer.send("hi")
            assert await newcomer.recv() == "hi"
            await real.send("me too")
            assert await real.recv() == "me too"
            assert len(shared.open) <= 5 and real.state is State.OPEN
        for _, w in halves:
            w.close()


async def test_when_every_connection_is_a_real_client_the_newcomer_is_refused() -> None:
    async with echo_with(EchoLimits(max_connections=2)) as (url, port, _), \
            connect(url, compression=None) as a, connect(url, compression=None) as b:
        reader, writer = await half_open(port)
        assert await dropped(reader)
        writer.close()
        for ws in (a, b):
            await ws.send("ok")
            assert await ws.recv() == "ok"


async def test_messages_being_assembled_are_bounded_across_connections() -> None:
    fragment = b"f" * (400 * 1024)
    async with echo_with(EchoLimits(max_assembling_bytes=1024 * 1024)) as (url, _, shared), \
            connect(url, compression=None, max_size=None) as a, \
            connect(url, compression=None, max_size=None) as b, \
            connect(url, compression=None, max_size=None) as c:
        for ws in (a, b):  # 800 KiB held: under the bound
            ws.protocol.send_frame(Frame(Opcode.BINARY, fragment, fin=False))
            ws.send_data()
        await until(lambda: shared.assembling == 2 * len(fragment))
        c.protocol.send_frame(Frame(Opcode.BINARY, fragment, fin=False))  # 1.2 MiB: over it
        c.send_data()
        with pytest.raises(ConnectionClosed):
            await c.recv()
        assert c.close_code == 1009
        for ws in (a, b):  # the others finish their messages
            ws.protocol.send_frame(Frame(Opcode.CONT, b"!", fin=True))
            ws.send_data()
            assert await ws.recv() == fragment + b"!"
        assert shared.assembling == 0


async def test_a_frame_still_arriving_counts_as_being_assembled() -> None:
    async with echo_with(EchoLimits(max_assembling_bytes=256 * 1024)) as (url, port, shared):
        client = ClientProtocol(parse_uri(url))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client.send_request(client.connect())
        writer.write(client.data_to_send()[0])
        client.receive_data(await reader.read(65536))
        assert client.state is State.OPEN
        client.send_binary(b"x" * (1024 * 1024))
        whole = b"".join(client.data_to_send())
        writer.write(whole[: 512 * 1024])  # half a frame, then silence
        assert (1009).to_bytes(2, "big") in await until_closed(reader)  # a close frame (1009), then the end
        writer.close()
        assert shared.assembling == 0


def test_the_connection_limit_leaves_a_quarter_of_the_descriptors_free() -> None:
    assert connection_limit(200) == 150 and connection_limit(1024) == 768 and connection_limit(1) == 1
