"""Issue 21: which connection a newer stream or poll cuts (``relay_node.sockets.receivers.supersede``).

The decision depends only on what the previous connection reports unsent, so the first tests use
``Held``, a connection double that reports a number and records a cut; the socket is real (an
in-process ``RelaySocket`` over a real upstream WebSocket, as in test_stream_session.py). The last
test gives the number and the cut of a real connection (``RelayHTTPProtocol`` on loopback, a client
that never reads); tests/faults/test_receiver_memory.py runs the whole path in a real relay.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from polysocket_cli.processes import free_port
from polysocket_core.control import EstablishRequest
from polysocket_core.sequencing import poll_answer
from polysocket_core.wire import StreamParams
from relay_node.edge.http1 import Answer, Connections, Limits, ProtocolRequest, RelayHTTPProtocol
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets.receivers import SLACK_BYTES, supersede
from relay_node.sockets.socket import RelaySocket
from relay_node.sockets.stream import open_stream
from relay_node.sockets.table import SocketTable

SID = "c" * 32


class Held:
    """A connection double: ``unsent`` bytes the client has not read; ``cuts`` how often it was cut.
    Also a stream's sink (it takes chunks and counts them as unsent)."""

    def __init__(self, unsent: int = 0) -> None:
        self.unsent = unsent
        self.cuts = 0
        self.ended = 0

    def unsent_bytes(self) -> int:
        return self.unsent

    def cut(self) -> None:
        self.cuts += 1
        self.unsent = 0

    def write_chunk(self, data: bytes) -> None:
        self.unsent += len(data)

    def end_stream(self) -> None:
        self.ended += 1


def test_the_previous_connection_is_cut_only_above_the_slack_and_only_if_another() -> None:
    assert not supersede(None, Held())  # the socket's first answer
    kept, over, full = Held(SLACK_BYTES), Held(SLACK_BYTES + 1), Held(10 * SLACK_BYTES)
    assert not supersede(kept, Held()) and kept.cuts == 0  # a client that reads keeps less than this
    assert supersede(over, Held()) and over.cuts == 1
    assert not supersede(full, full) and full.cuts == 0  # the same connection (pipelined): paused, not cut
    assert supersede(full, None) and full.cuts == 1  # a newer answer whose connection is unknown still cuts


async def echo(conn: ServerConnection) -> None:
    try:
        async for msg in conn:
            await conn.send(msg)
    except ConnectionClosed:
        pass


@pytest.fixture
async def sock() -> AsyncIterator[RelaySocket]:
    port = free_port()
    async with serve(echo, "127.0.0.1", port, compression=None):
        cfg = RelayConfig(fqdn="n.localhost", idle_timeout_s=5.0)
        table = SocketTable(cfg, RelayMetrics())
        req = EstablishRequest(id="r", socket=SID, target=f"ws://127.0.0.1:{port}/", protocols=[],
                               expires_at_ms=int(time.time() * 1000) + 10_000, token_id="tok")
        s = await table.open(req, table.ledger.take(req.id, req.token_id))
        yield s
        s.abort()


def stream_params() -> StreamParams:
    return StreamParams(socket=SID, ack=-1, ttl_ms=60_000, pad=False)


async def test_a_newer_stream_or_poll_cuts_the_connection_left_holding_the_previous_answer(sock: RelaySocket) -> None:
    sock.upstream_message("\x01" * 100_000)  # 600 kB once encoded, as the target would send it
    first = Held()
    first_stream = open_stream(sock, stream_params())
    data, more = first_stream.start(first)
    assert not more and len(data) > 6 * 100_000  # the message crossed the stream's budget: it ended
    first.unsent = len(data)  # the client reads none of it
    # A poll on another connection takes over: the ended answer's connection is cut.
    second = Held()
    assert b"\\u0001" in await sock.poll(-1, 0, second)
    assert first.cuts == 1 and sock.metrics.answers_cut.value == 1
    # The poll's answer was read (nothing left unsent): the next stream leaves that connection be.
    third = Held()
    data, _ = open_stream(sock, stream_params()).start(third)
    assert second.cuts == 0 and sock.metrics.answers_cut.value == 1
    # A stream pipelined on the same connection does not cut its own connection.
    third.unsent = len(data)
    open_stream(sock, stream_params()).start(third)
    assert third.cuts == 0 and sock.metrics.answers_cut.value == 1


async def test_a_superseded_poll_answers_empty_even_when_messages_woke_it(sock: RelaySocket) -> None:
    """The messages go to the newer receiver only, so no connection but the newest one gets them:
    a poll woken by a message and superseded before it answered answers nothing."""
    polling = asyncio.create_task(sock.poll(-1, 60_000, Held()))
    for _ in range(300):
        if sock.receiver is not None:
            break
        await asyncio.sleep(0.01)
    sock.upstream_message("x")  # wakes the poll; it answers when its task runs next ...
    sink = Held()
    stream = open_stream(sock, stream_params())
    data, more = stream.start(sink)  # ... after a stream took the socket over
    assert await asyncio.wait_for(polling, 5) == poll_answer([])
    assert b'"data":"x"' in data and more and sock.receiver is stream
    stream.end()


async def test_a_real_connection_reports_what_its_client_left_unread_and_is_cut_at_once() -> None:
    """``RelayHTTPProtocol`` as a carrier: an answer the client never reads (a 4 KiB receive
    window) shows as unsent bytes; ``cut`` drops the connection and the request queued behind."""
    big = b"x" * (8 * 1024 * 1024)  # loopback's kernel buffers take up to about 3 MiB of it
    answered: list[bytes] = []

    async def answer(path: str, query: bytes, req: ProtocolRequest) -> Answer:
        answered.append(query)
        return 200, [(b"content-type", b"text/plain")], big

    conns = Connections()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RelayHTTPProtocol(answer, Limits(), conns), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, ("127.0.0.1", port))
        await loop.sock_sendall(client, b"GET /a?1 HTTP/1.1\r\nHost: x\r\n\r\nGET /a?2 HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(300):
            if answered and conns.open:
                break
            await asyncio.sleep(0.01)
        (proto,) = conns.open
        assert proto.unsent_bytes() > SLACK_BYTES  # what the kernel did not take stays in the transport
        proto.cut()
        for _ in range(300):
            if not conns.open:
                break
            await asyncio.sleep(0.01)
        assert not conns.open and proto.unsent_bytes() == 0
        assert answered == [b"1"]  # the request behind the unread answer never ran
    finally:
        client.close()
        server.close()
        await server.wait_closed()
