"""A SocketStream on one in-process RelaySocket (a real upstream WebSocket to an in-process echo
target), with a recording sink in place of the HTTP connection: the time budget, heartbeats, the
idle sweep sparing a socket with a stream, what a stream holds once it ended, and acks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from polysocket_cli.processes import free_port
from polysocket_core.control import EstablishRequest
from polysocket_core.lifecycle import SocketState
from polysocket_core.sequencing import poll_answer
from polysocket_core.wire import SendParams, StreamParams
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets.receivers import PollReceiver
from relay_node.sockets.socket import RelaySocket
from relay_node.sockets.stream import open_stream
from relay_node.sockets.table import SocketTable

SID = "s" * 32


class Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ended = 0

    def write_chunk(self, data: bytes) -> None:
        assert not self.ended
        self.chunks.append(data)

    def end_stream(self) -> None:
        self.ended += 1

    def unsent_bytes(self) -> int:  # a client that reads everything at once
        return 0

    def cut(self) -> None:
        raise AssertionError("a connection with nothing unsent is never cut")


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
        cfg = RelayConfig(fqdn="n.localhost", stream_seconds=0.3, idle_timeout_s=5.0)
        table = SocketTable(cfg, RelayMetrics())
        req = EstablishRequest(id="r", socket=SID, target=f"ws://127.0.0.1:{port}/", protocols=[],
                               expires_at_ms=int(time.time() * 1000) + 10_000, token_id="tok")
        s = await table.open(req, table.ledger.take(req.id, req.token_id))
        s.claim()  # as its browser's first request does: the sweeps here are about the idle timeout
        yield s
        s.abort()


def params(ack: int = -1, ttl_ms: int = 60_000) -> StreamParams:
    return StreamParams(socket=SID, ack=ack, ttl_ms=ttl_ms, pad=False)


async def send(sock: RelaySocket, seq: int, text: str, ack: int = -1) -> None:
    await sock.send(SendParams(socket=SID, seq=seq, kind="t", fin=True, data=text.encode(), ack=ack))


async def until(cond: Callable[[], object], what: str) -> None:
    for _ in range(300):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_the_time_budget_ends_a_quiet_stream(sock: RelaySocket) -> None:
    stream = open_stream(sock, params())
    sink = Sink()
    first, more = stream.start(sink)
    assert first == b":ok\n\n" and more and sock.receiver is stream
    assert sock.metrics.streams_open.value == 1
    await until(lambda: sink.ended, "the stream never ended")
    assert sink.chunks == [] and sock.receiver is None and sock.metrics.streams_open.value == 0


async def test_heartbeats_while_quiet(sock: RelaySocket) -> None:
    stream = open_stream(sock, params(ttl_ms=30))
    sink = Sink()
    stream.start(sink)
    await until(lambda: len(sink.chunks) >= 2, "no heartbeats")
    assert set(sink.chunks) == {b":hb\n\n"}
    stream.end()


async def test_messages_are_written_as_they_arrive_and_acks_on_sends_free_them(sock: RelaySocket) -> None:
    stream = open_stream(sock, params())
    sink = Sink()
    stream.start(sink)
    await send(sock, 0, "a")
    await until(lambda: sink.chunks, "nothing written")
    assert sink.chunks == [b'id: 0\ndata: {"seq":0,"type":"text","data":"a"}\n\n']
    assert len(sock.outbound) == 1  # written is not acknowledged
    await send(sock, 1, "b", ack=0)
    await until(lambda: len(sink.chunks) == 2, "second message not written")
    assert sock.outbound.last_seq == 1 and len(sock.outbound) == 1  # the send's ack freed seq 0
    stream.end()


async def test_an_open_stream_keeps_the_socket_from_the_idle_sweep(sock: RelaySocket) -> None:
    stream = open_stream(sock, params())
    stream.start(Sink())
    later = time.monotonic() + 60
    assert sock.sweep(later) is None and sock.state is SocketState.OPEN
    stream.lost()  # the client went away: the receiver is detached, the socket idles from now
    assert sock.receiver is None
    assert sock.sweep(time.monotonic() + 60) is not None


async def test_a_newer_stream_replaces_the_current_one(sock: RelaySocket) -> None:
    old, new = open_stream(sock, params()), open_stream(sock, params())
    old_sink, new_sink = Sink(), Sink()
    old.start(old_sink)
    new.start(new_sink)
    assert old_sink.ended == 1 and sock.receiver is new and not new_sink.ended
    await send(sock, 0, "x")
    await until(lambda: new_sink.chunks, "the newer stream got nothing")
    assert old_sink.chunks == []
    new.end()


async def test_a_poll_takes_the_socket_over_from_an_open_stream(sock: RelaySocket) -> None:
    """One receiver per socket, the newest request wins: the stream ends, the poll waits and is
    the one that gets the next message."""
    stream, sink = open_stream(sock, params()), Sink()
    stream.start(sink)
    polling = asyncio.create_task(sock.poll(-1, 60_000))
    await until(lambda: isinstance(sock.receiver, PollReceiver), "the poll did not become the receiver")
    assert sink.ended == 1 and sock.metrics.streams_open.value == 0
    await send(sock, 0, "x")
    answer = await asyncio.wait_for(polling, 5)
    assert b'"data":"x"' in answer and sink.chunks == [] and sock.receiver is None


async def test_a_stream_or_a_newer_poll_answers_a_waiting_poll_at_once(sock: RelaySocket) -> None:
    first = asyncio.create_task(sock.poll(-1, 60_000))
    await until(lambda: sock.receiver is not None, "the poll did not wait")
    second = asyncio.create_task(sock.poll(-1, 60_000))
    assert await asyncio.wait_for(first, 5) == poll_answer([])  # superseded: answered at once
    assert not second.done()
    stream, sink = open_stream(sock, params()), Sink()
    stream.start(sink)
    assert await asyncio.wait_for(second, 5) == poll_answer([])
    assert sock.receiver is stream
    stream.end()


class BrokenSink(Sink):
    def write_chunk(self, data: bytes) -> None:
        raise RuntimeError("the connection broke")


async def test_a_failing_write_detaches_the_stream_not_the_socket(sock: RelaySocket,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    stream = open_stream(sock, params())
    sink = BrokenSink()
    stream.start(sink)
    await send(sock, 0, "a")
    await until(lambda: sink.ended, "the stream was not ended")
    assert sock.receiver is None and "stream write failed" in caplog.text
    await send(sock, 1, "b")  # the upstream reader lives on: the socket still relays
    await until(lambda: len(sock.outbound) == 2, "the second echo never came")
    assert sock.state is SocketState.OPEN


async def test_the_byte_budget_counts_event_bytes_not_fragment_bytes(sock: RelaySocket) -> None:
    # Small messages: an event is ~40 % larger than its JSON fragment. The stream must end right
    # after the event that takes the *event* bytes past the budget, not write ~40 % more.
    for i in range(30):
        await send(sock, i, "m")
    await until(lambda: len(sock.outbound) == 30, "the echoes never came")
    stream = open_stream(sock, params())
    stream.max_bytes = 200
    first, more = stream.start(Sink())
    assert not more  # the backlog alone spends the budget
    events = [e + b"\n\n" for e in first[len(b":ok\n\n"):].split(b"\n\n") if e]
    assert sum(map(len, events[:-1])) <= 200 < sum(map(len, events))
    assert stream.cursor == len(events) - 1  # the next stream starts after the last one written


async def test_a_stream_that_ends_at_once_counts_as_started(sock: RelaySocket) -> None:
    await send(sock, 0, "m" * 300)
    await until(lambda: len(sock.outbound) == 1, "the echo never came")
    stream = open_stream(sock, params())
    stream.max_bytes = 100  # the backlog alone spends the budget
    first, more = stream.start(Sink())
    assert not more and b'"seq":0' in first
    assert sock.metrics.streams_total.value == 1 and sock.metrics.streams_open.value == 0
    assert sock.receiver is None


async def test_what_a_stream_queues_for_a_client_that_acks_without_reading_is_its_byte_budget(
        sock: RelaySocket) -> None:
    # Acks on sends free the socket's buffer whether or not the stream was read, so the buffer
    # bound does not limit what the stream queues for such a client: its byte budget does.
    stream = open_stream(sock, params())
    stream.max_bytes = 1000
    sink = Sink()
    stream.start(sink)
    for i in range(40):
        await send(sock, i, "z" * 100, ack=sock.outbound.next_seq - 1)  # acks everything, reads nothing
        if sink.ended:
            break
    await until(lambda: sink.ended, "the stream never ended")
    largest = max(map(len, sink.chunks))
    assert 1000 < sum(map(len, sink.chunks)) <= 1000 + largest
