"""The ``polysocket echo`` target in process, against websockets' own client: what the relay's tests
and the bench rely on (echo, commands, subprotocol, protocol checks)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from polysocket_cli.echo import EchoProtocol, run_echo
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

    server = await loop.create_server(factory, "127.0.0.1", 0)
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
