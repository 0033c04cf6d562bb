"""D1 in process: one RelaySocket against a flooding WebSocket target. A parked socket holds its
buffer plus one message, with the upstream transport paused; closing a parked socket completes the
closing handshake (the client gets the target's code, not 1006 after a timeout); a freed socket
lets go of everything at once, without waiting for the cycle collector."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed

from polysocket_cli.processes import free_port
from polysocket_core.control import EstablishRequest
from polysocket_core.lifecycle import CloseCause, SocketState
from polysocket_core.wire import SendParams
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets import memory
from relay_node.sockets.socket import RelaySocket
from relay_node.sockets.table import SocketTable
from relay_node.sockets.upstream import Upstream

pytestmark = pytest.mark.faults

MESSAGE = 300_000
HIGH = 64 * 1024
ENCODED = len(b'{"seq":0,"type":"binary","data":""}') + (MESSAGE + 2) // 3 * 4
READ_CHUNK = 256 * 1024  # asyncio's largest read
MiB = 1024 * 1024


class Flood:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.payloads = [bytes([i % 251]) * MESSAGE for i in range(4)]
        self.sent = 0
        self.closes: list[int | None] = []

    async def handler(self, conn: ServerConnection) -> None:
        try:
            while True:
                await conn.send(self.payloads[self.sent % 4])
                self.sent += 1
        except ConnectionClosed:
            pass
        self.closes.append(conn.close_code)

    async def settled(self) -> None:
        last, still = -1, 0
        for _ in range(200):
            await asyncio.sleep(0.02)
            still = still + 1 if self.sent == last else 0
            if still >= 10:
                return
            last = self.sent
        raise AssertionError("the target never stopped sending")


@pytest.fixture
async def flood() -> AsyncIterator[Flood]:
    f = Flood()
    async with serve(f.handler, "127.0.0.1", f.port, max_size=None, compression=None):
        yield f


async def open_socket(url: str) -> tuple[SocketTable, RelaySocket]:
    cfg = RelayConfig(fqdn="n.localhost", buffer_high_bytes=HIGH, max_message_bytes=1024 * 1024,
                      close_timeout_s=5.0)
    table = SocketTable(cfg, RelayMetrics())
    req = EstablishRequest(id="r", socket="s" * 32, target=url, protocols=[],
                           expires_at_ms=int(time.time() * 1000) + 10_000, token_id="tok")
    return table, await table.open(req, table.ledger.take(req.id, req.token_id))


def raw_in_parser(conn: Upstream) -> int:
    return len(conn.proto.reader.buffer)


def messages(answer: bytes) -> list[dict[str, object]]:
    return list(orjson.loads(answer)["messages"])


async def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.01)
    assert cond(), "condition not reached"  # type: ignore[operator]


async def test_a_parked_socket_holds_its_buffer_plus_one_message(flood: Flood) -> None:
    _, sock = await open_socket(flood.url)
    received: list[bytes] = []
    for _ in range(6):  # park, drain by acknowledging, park again
        await flood.settled()
        assert sock._room is not None, "the reader is parked"
        assert not sock.conn.transport.is_reading(), "reading upstream is paused"
        assert sock.outbound.unacked_bytes <= HIGH + ENCODED
        assert raw_in_parser(sock.conn) < MESSAGE + READ_CHUNK  # the message in progress, one read
        answer = messages(await sock.poll(len(received) - 1, 0))
        for m in answer:
            assert m["seq"] == len(received)
            received.append(base64.b64decode(str(m["data"])))
        await sock.poll(len(received) - 1, 0)  # acknowledge: the reader reads again
    assert received == [flood.payloads[i % 4] for i in range(len(received))]  # nothing lost, in order
    sock.close_upstream(1000, "done")
    await wait_for(lambda: sock.state is SocketState.CLOSED)


async def test_closing_a_parked_socket_completes_the_handshake(flood: Flood) -> None:
    _, sock = await open_socket(flood.url)
    await flood.settled()
    assert sock._room is not None
    started = time.monotonic()
    sock.close_upstream(1000, "bye")
    await wait_for(lambda: sock.state is SocketState.CLOSED, timeout=10)
    took = time.monotonic() - started
    assert flood.closes == [1000]
    got = messages(await sock.poll(-1, 0))
    while got[-1]["type"] != "close":
        got += messages(await sock.poll(int(str(got[-1]["seq"])), 0))
    assert got[-1]["code"] == 1000 and got[-1]["reason"] == "bye", got[-1]  # not 1006 after a timeout
    assert took < sock.config.close_timeout_s, took  # the handshake was read, not timed out
    assert sock.outbound.unacked_bytes <= HIGH + 2 * ENCODED


async def wait_lost(upstream: Upstream) -> None:
    await wait_for(lambda: upstream.lost, timeout=10)


async def test_a_freed_socket_lets_go_at_once_without_the_cycle_collector(flood: Flood) -> None:
    gc.collect()
    gc.disable()
    try:
        table, sock = await open_socket(flood.url)
        await flood.settled()
        assert sock.outbound.unacked_bytes > HIGH
        released = memory.trimmer.released
        sock.close(CloseCause.IDLE)  # nobody will collect a close: freed now
        assert sock.state is SocketState.FREED and len(table) == 0
        assert sock.outbound.unacked_bytes == 0  # the buffer went at once
        assert memory.trimmer.released - released > HIGH  # and is counted for the next trim
        upstream = sock.conn
        del sock
        await wait_lost(upstream)
        await wait_for(lambda: flood.closes == [1001], timeout=10)
        del upstream
        await asyncio.sleep(0.1)  # the transport's last callbacks
        left = [type(o).__name__ for o in gc.get_objects() if type(o) in (RelaySocket, Upstream)]
        assert left == [], left  # nothing is waiting for gc.collect()
    finally:
        gc.enable()


@pytest.mark.parametrize("cut", ["eof", "reset"])
async def test_a_connection_the_target_cuts_lets_go_at_once_without_the_cycle_collector(cut: str) -> None:
    """A target that goes away without a close frame (FIN or RST) ends websockets' parser with an
    exception whose traceback holds the protocol: closing the parser alone left the protocol (its
    reader, the handshake) for ``gc.collect()`` (``relay_node.sockets.upstream.release_parser``)."""

    async def cutter(conn: ServerConnection) -> None:
        await conn.send("last words")
        await asyncio.sleep(0.05)
        transport = conn.transport
        if cut == "eof":
            transport.write_eof()  # FIN: the relay reads EOF, with no closing handshake
            await asyncio.sleep(0.5)
        else:
            transport.abort()  # RST

    port = free_port()
    gc.collect()
    gc.disable()
    try:
        async with serve(cutter, "127.0.0.1", port, compression=None):
            table, sock = await open_socket(f"ws://127.0.0.1:{port}/")
            sock.claim()
            upstream = sock.conn
            await wait_lost(upstream)
            answer = messages(await sock.poll(-1, 0))
            assert [m["type"] for m in answer] == ["text", "close"] and answer[1]["code"] == 1006, answer
            await sock.poll(int(answer[1]["seq"]), 0)  # the client acks the close: freed
            assert sock.state is SocketState.FREED and len(table) == 0
            del sock, upstream, answer, table
            await asyncio.sleep(0.1)  # the transport's last callbacks
            left = [type(o).__name__ for o in gc.get_objects() if type(o) in (RelaySocket, Upstream, ClientProtocol)]
            assert left == [], left  # nothing is waiting for gc.collect()
    finally:
        gc.enable()


async def test_a_socket_aborted_while_parked_ends_its_reader(flood: Flood) -> None:
    table, sock = await open_socket(flood.url)
    await flood.settled()
    sock.abort()
    assert sock.state is SocketState.FREED and len(table) == 0 and table.ledger.counts() == {}
    await wait_for(lambda: sock.conn.lost)


def test_trimmer_trims_after_enough_was_released() -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    t = memory.Trimmer(after_bytes=100, trim=trim)
    t.released += 99
    assert not t.maybe_trim() and calls == []
    t.released += 1
    assert t.maybe_trim() and calls == [0] and t.released == 0 and t.trims == 1
    assert not t.maybe_trim()


async def test_a_slow_target_is_not_taken_for_a_stalled_one() -> None:
    """The stall check fails only a target that takes no bytes at all: one that reads slowly (a
    256 KiB message every 20 ms) while the client sends faster is left alone."""
    port = free_port()
    received: list[str] = []

    async def slow(conn: ServerConnection) -> None:
        async for msg in conn:
            received.append(str(msg))
            await asyncio.sleep(0.02)

    async with serve(slow, "127.0.0.1", port, max_queue=1, compression=None, max_size=None):
        table = SocketTable(RelayConfig(fqdn="n.localhost", ping_timeout_s=0.3), RelayMetrics())
        req = EstablishRequest(id="r", socket="s" * 32, target=f"ws://127.0.0.1:{port}/", protocols=[],
                               expires_at_ms=int(time.time() * 1000) + 10_000, token_id="tok")
        sock = await table.open(req, table.ledger.take(req.id, req.token_id))
        chunk = "w" * (256 * 1024)
        sends = asyncio.gather(*(sock.send(SendParams(socket=sock.id, seq=i, kind="t", fin=True,
                                                      data=chunk.encode())) for i in range(40)))
        while not sends.done():
            table.sweep()
            assert sock.state is SocketState.OPEN
            await asyncio.sleep(0.1)
        await sends
        await wait_for(lambda: len(received) == 40)
        sock.close_upstream(1000, "")


MAX_MESSAGE = RelayConfig(fqdn="n.localhost").max_message_bytes  # the default --max-message (4 MiB)


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragments"])
async def test_a_target_message_over_the_limit_is_never_held_whole(fragmented: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A 16 MiB message from the target is refused from its frame header (one frame) or at the
    fragment that crosses ``--max-message`` (fragments): after every read, what the upstream holds
    of it, raw in websockets' parser plus the fragments collected so far, stays below the limit
    plus one read. The client gets the message before it, then close 1009."""
    port = free_port()
    big = b"\x00" * (16 * MiB)
    held: list[int] = []
    receive = Upstream.data_received

    def measured(self: Upstream, data: bytes) -> None:
        receive(self, data)
        held.append(raw_in_parser(self) + sum(len(p) for p in self._parts or ()))

    monkeypatch.setattr(Upstream, "data_received", measured)

    async def handler(conn: ServerConnection) -> None:
        await conn.send("before")
        with contextlib.suppress(ConnectionClosed):
            if fragmented:
                await conn.send(big[i:i + MiB] for i in range(0, len(big), MiB))
            else:
                await conn.send(big)
            await conn.wait_closed()

    async with serve(handler, "127.0.0.1", port, max_size=None, compression=None):
        table = SocketTable(RelayConfig(fqdn="n.localhost"), RelayMetrics())
        req = EstablishRequest(id="r", socket="s" * 32, target=f"ws://127.0.0.1:{port}/", protocols=[],
                               expires_at_ms=int(time.time() * 1000) + 10_000, token_id="tok")
        sock = await table.open(req, table.ledger.take(req.id, req.token_id))
        got = messages(await sock.poll(-1, 5000))
        while got[-1]["type"] != "close":
            got += messages(await sock.poll(int(str(got[-1]["seq"])), 5000))
    print(f"16 MiB message ({'fragments' if fragmented else 'one frame'}): {len(held)} reads, the upstream held "
          f"at most {max(held) / MiB:.2f} MiB of it")
    assert [m.get("data") for m in got[:-1]] == ["before"]
    assert (got[-1]["code"], got[-1]["reason"]) == (1009, "message from the target is too big"), got[-1]
    if fragmented:
        # Fragments are collected up to the limit (the measurement reaches it), never beyond.
        assert MAX_MESSAGE - MiB <= max(held) < MAX_MESSAGE + READ_CHUNK, max(held)
    else:
        assert max(held) < READ_CHUNK, max(held)  # refused from the frame's header: nothing of it kept
