"""The lean upstream (relay_node.sockets.upstream) in process against real ``websockets`` targets: the
keepalive the table's sweep drives, the closing handshake's timeout, back-pressure, message
assembly, the opening handshake's subprotocol, Origin, redirects and TLS on a pinned address."""

from __future__ import annotations

import asyncio
import gc
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import orjson
import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from polysocket_cli.processes import free_port
from polysocket_core.control import EstablishRequest
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.lifecycle import SocketState
from polysocket_core.wire import SendParams
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets import upstream
from relay_node.sockets.socket import RelaySocket
from relay_node.sockets.table import USER_AGENT, SocketTable

Handler = Callable[[ServerConnection], Awaitable[None]]


@dataclass
class Target:
    port: int
    conns: list[ServerConnection] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


async def echo_into(t: Target, conn: ServerConnection) -> None:
    t.conns.append(conn)
    try:
        async for msg in conn:
            t.received.append(msg)
    except ConnectionClosed:
        pass


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target(free_port())

    async def handler(conn: ServerConnection) -> None:
        t.requests.append(conn.request)  # type: ignore[arg-type]
        await echo_into(t, conn)

    def chat_if_offered(conn: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        return Subprotocol("chat") if "chat" in offered else None

    async with serve(handler, "127.0.0.1", t.port, ping_interval=None, select_subprotocol=chat_if_offered,
                     close_timeout=0.5):
        yield t


async def open_socket(url: str, protocols: list[str] | None = None, addresses: list[str] | None = None,
                      meta: dict[str, str] | None = None, **cfg: object) -> tuple[SocketTable, RelaySocket]:
    table = SocketTable(RelayConfig(fqdn="n.localhost", **cfg), RelayMetrics())  # type: ignore[arg-type]
    req = EstablishRequest(id="r", socket="s" * 32, target=url, protocols=protocols or [],
                           expires_at_ms=int(time.time() * 1000) + 10_000, token_id="tok",
                           addresses=addresses or [], meta=meta or {})
    sock = await table.open(req, table.ledger.take(req.id, req.token_id))
    sock.claim()  # as its browser's first request does: the sweeps below are about the target, not the claim
    return table, sock


async def wait_for(cond: Callable[[], object], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert cond(), "condition not reached"


async def drain_messages(sock: RelaySocket) -> list[dict[str, object]]:
    """Poll until the close message, acknowledging as it goes."""
    got: list[dict[str, object]] = []
    for _ in range(100):
        ack = int(str(got[-1]["seq"])) if got else -1
        got += orjson.loads(await sock.poll(ack, 1000))["messages"]
        if got and got[-1]["type"] == "close":
            return got
    raise AssertionError(f"no close message: {got}")


async def test_the_sweep_pings_and_keeps_a_target_that_answers(target: Target) -> None:
    table, sock = await open_socket(target.url, ping_interval_s=5.0, ping_timeout_s=5.0)
    t0 = time.monotonic()
    table.sweep(t0 + 1)
    assert not sock.conn._ping_sent  # not due yet
    table.sweep(t0 + 6)
    assert sock.conn._ping_sent  # a ping is out
    await wait_for(lambda: not sock.conn._ping_sent)  # the target's pong came
    table.sweep(t0 + 20)  # long after: the answered ping is not held against it
    assert sock.state is SocketState.OPEN


async def test_the_sweep_fails_a_socket_whose_target_stops_answering_pings(target: Target) -> None:
    table, sock = await open_socket(target.url, ping_interval_s=5.0, ping_timeout_s=5.0, close_timeout_s=0.2)
    await wait_for(lambda: len(target.conns) == 1)
    assert target.conns[0].transport is not None
    target.conns[0].transport.pause_reading()  # the target hangs: no pong will come
    t0 = time.monotonic()
    table.sweep(t0 + 6)
    assert sock.conn._ping_sent
    table.sweep(t0 + 6 + 4)
    assert sock.state is SocketState.OPEN  # within the timeout
    table.sweep(t0 + 6 + 5)
    assert sock.state is SocketState.CLOSING  # failed; the close frame cannot get through either
    await wait_for(lambda: sock.state is SocketState.CLOSED)  # the close timeout ended it
    got = await drain_messages(sock)
    assert got[-1]["code"] == 1006, got  # as websockets' own keepalive reported it


async def test_without_a_ping_timeout_pings_go_on_every_interval(target: Target) -> None:
    """--ping-timeout off keeps the pings going (NATs and proxies see traffic), as websockets'
    keepalive does: one unanswered ping stopped them for the connection's life."""
    table, sock = await open_socket(target.url, ping_interval_s=5.0, ping_timeout_s=None, idle_timeout_s=7200.0)
    await wait_for(lambda: len(target.conns) == 1)
    assert target.conns[0].transport is not None
    target.conns[0].transport.pause_reading()  # no pong will come
    t0 = time.monotonic()
    table.sweep(t0 + 6)
    assert sock.conn._ping_sent == t0 + 6
    table.sweep(t0 + 12)
    assert sock.conn._ping_sent == t0 + 12 and sock.state is SocketState.OPEN  # a second ping went out


async def test_no_ping_when_the_interval_is_off(target: Target) -> None:
    table, sock = await open_socket(target.url, ping_interval_s=None, idle_timeout_s=7200.0)
    table.sweep(time.monotonic() + 3600)
    assert not sock.conn._ping_sent and sock.state is SocketState.OPEN


async def test_a_close_the_target_never_answers_ends_after_the_close_timeout(target: Target) -> None:
    _, sock = await open_socket(target.url, close_timeout_s=0.3)
    await wait_for(lambda: len(target.conns) == 1)
    assert target.conns[0].transport is not None
    target.conns[0].transport.pause_reading()  # the target never reads our close frame
    sock.close_upstream(1000, "bye")
    assert sock.state is SocketState.CLOSING
    await wait_for(lambda: sock.conn.lost)  # aborted by the close timer, not left open
    got = await drain_messages(sock)
    assert got[-1]["code"] == 1006, got  # no closing handshake happened


async def test_a_close_the_target_answers_gives_the_client_its_code(target: Target) -> None:
    _, sock = await open_socket(target.url)
    await wait_for(lambda: len(target.conns) == 1)
    await target.conns[0].close(4002, "target says bye")
    got = await drain_messages(sock)
    assert got[-1]["code"] == 4002 and got[-1]["reason"] == "target says bye", got
    assert sock.conn.lost


async def test_back_pressure_pauses_and_resumes_reading_with_nothing_lost() -> None:
    port = free_port()
    sent: list[int] = []

    async def flood(conn: ServerConnection) -> None:
        for i in range(200):  # 40 MB: more than the kernel's loopback buffers hold
            await conn.send(f"{i:05d}" + "x" * 200_000)
            sent.append(i)

    async with serve(flood, "127.0.0.1", port, compression=None):
        table, sock = await open_socket(f"ws://127.0.0.1:{port}/", buffer_high_bytes=50_000,
                                        ping_interval_s=20.0, ping_timeout_s=20.0, idle_timeout_s=3600.0)
        await wait_for(lambda: sock._room is not None)  # parked at the bound
        assert sock.conn.transport is not None and not sock.conn.transport.is_reading()
        await asyncio.sleep(0.2)
        assert len(sent) < 200  # the target is held back by TCP, not buffered here
        assert sock.outbound.unacked_bytes < 50_000 + 2 * 256 * 1024  # one message or one read over
        t0 = time.monotonic()
        for later in (30, 60, 90):  # the pong cannot be read while parked: no ping, no failure
            table.sweep(t0 + later)
        assert sock.state is SocketState.OPEN and not sock.conn._ping_sent
        received: list[str] = []
        while len(received) < 200:
            answer = orjson.loads(await sock.poll(len(received) - 1, 1000))
            received += [str(m["data"]) for m in answer["messages"]]
        await sock.poll(len(received) - 1, 0)
        assert [int(r[:5]) for r in received] == list(range(200))  # in order, none lost or repeated
        assert sock._room is None and sock.conn.transport.is_reading()
        sock.close_upstream(1000, "")


async def test_fragmented_and_early_messages_arrive_whole_and_in_order() -> None:
    port = free_port()

    async def handler(conn: ServerConnection) -> None:
        await conn.send("first, before the socket exists")
        await conn.send(["frag", "ment", "ed"])
        await conn.send([b"\x00", b"\x01\x02"])
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", port):
        _, sock = await open_socket(f"ws://127.0.0.1:{port}/")
        got: list[dict[str, object]] = []
        while len(got) < 3:
            got += orjson.loads(await sock.poll(len(got) - 1, 1000))["messages"]
        assert [(m["type"], m["data"]) for m in got] == [
            ("text", "first, before the socket exists"), ("text", "fragmented"), ("binary", "AAEC")]
        sock.close_upstream(1000, "")


async def test_a_target_message_over_the_limit_closes_1009() -> None:
    port = free_port()

    async def handler(conn: ServerConnection) -> None:
        await conn.send("y" * 2000)
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", port):
        _, sock = await open_socket(f"ws://127.0.0.1:{port}/", max_message_bytes=1000)
        got = await drain_messages(sock)
        assert got[-1]["code"] == 1009, got


async def test_sends_reach_the_target_and_a_send_after_its_close_is_refused(target: Target) -> None:
    _, sock = await open_socket(target.url)
    big = b"z" * (1024 * 1024)  # over the transport's high-water mark: the send drains
    await sock.send(SendParams(socket=sock.id, seq=0, kind="t", fin=True, data=b"hello"))
    await sock.send(SendParams(socket=sock.id, seq=1, kind="b", fin=True, data=big))
    await wait_for(lambda: len(target.received) == 2)
    assert target.received == ["hello", big]
    await target.conns[0].close(1000, "")
    await wait_for(lambda: sock.state is SocketState.CLOSED)
    with pytest.raises(PolysocketError) as exc:
        await sock.send(SendParams(socket=sock.id, seq=2, kind="t", fin=True, data=b"late"))
    assert exc.value.code is ErrorCode.SOCKET_CLOSED


async def test_handshake_carries_subprotocol_origin_and_user_agent(target: Target) -> None:
    _, sock = await open_socket(target.url, protocols=["other", "chat"], addresses=["127.0.0.1"],
                                meta={"origin": "https://page.example"})
    assert sock.protocol == "chat"
    await wait_for(lambda: len(target.requests) == 1)
    headers = target.requests[0].headers
    assert headers["Origin"] == "https://page.example" and headers["User-Agent"] == USER_AGENT
    assert headers["Host"] == f"127.0.0.1:{target.port}"
    sock.close_upstream(1000, "")


def redirecting(location: str) -> Callable[[ServerConnection, Request], Response | None]:
    def process(conn: ServerConnection, request: Request) -> Response | None:
        if request.path != "/":
            return None
        response = conn.respond(302, "")
        response.headers["Location"] = location
        return response
    return process


async def test_a_same_origin_redirect_is_followed_on_the_pinned_address(target: Target) -> None:
    port = free_port()
    paths: list[str] = []

    async def handler(conn: ServerConnection) -> None:
        paths.append(conn.request.path)  # type: ignore[union-attr]
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", port, process_request=redirecting("/moved")):
        _, sock = await open_socket(f"ws://127.0.0.1:{port}/", addresses=["127.0.0.1"])
        await wait_for(lambda: paths == ["/moved"])
        sock.close_upstream(1000, "")


async def test_a_cross_origin_redirect_is_refused_with_a_pinned_address(target: Target) -> None:
    port = free_port()

    async def handler(conn: ServerConnection) -> None:
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", port, process_request=redirecting(target.url)):
        with pytest.raises(PolysocketError) as exc:
            await open_socket(f"ws://127.0.0.1:{port}/", addresses=["127.0.0.1"])
    assert exc.value.code is ErrorCode.UPSTREAM_FAILED and "cross-origin" in exc.value.message
    assert target.conns == []


async def test_a_refused_handshake_is_upstream_failed_with_the_status() -> None:
    port = free_port()

    def refuse(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(403, "no")

    async def handler(conn: ServerConnection) -> None:
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", port, process_request=refuse):
        with pytest.raises(PolysocketError) as exc:
            await open_socket(f"ws://127.0.0.1:{port}/")
    assert exc.value.code is ErrorCode.UPSTREAM_FAILED and "HTTP 403" in exc.value.message


async def test_invalid_utf8_from_the_target_fails_the_connection() -> None:
    port = free_port()
    closes: list[int | None] = []

    async def handler(conn: ServerConnection) -> None:
        await conn.send("before")
        await conn.send(b"\xff\xfe broken", text=True)  # a text frame that is not UTF-8
        await conn.send("after")
        await conn.wait_closed()
        closes.append(conn.close_code)

    async with serve(handler, "127.0.0.1", port):
        _, sock = await open_socket(f"ws://127.0.0.1:{port}/")
        got = await drain_messages(sock)
        await wait_for(lambda: closes != [])
    assert [m.get("data") for m in got[:-1]] == ["before"], got  # nothing after the broken message
    assert got[-1]["type"] == "close" and got[-1]["code"] == 1006, got
    assert closes == [1007]  # the target was told why


@pytest.fixture
def tls_target_ca(monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A throwaway CA the relay's shared client context trusts."""
    ca = trustme.CA()
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    monkeypatch.setattr(upstream, "_tls", ctx)
    return ca


async def test_wss_on_a_pinned_address_verifies_the_urls_name(tls_target_ca: trustme.CA) -> None:
    """The TCP connection goes to the pinned address; TLS checks the certificate against the URL's
    host name (which does not even resolve here), and the Host header is that name too."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_target_ca.issue_cert("target.test").configure_cert(server_ctx)
    port = free_port()
    hosts: list[str] = []

    async def handler(conn: ServerConnection) -> None:
        hosts.append(conn.request.headers["Host"])  # type: ignore[union-attr]
        async for msg in conn:
            await conn.send(msg)

    async with serve(handler, "127.0.0.1", port, ssl=server_ctx):
        _, sock = await open_socket(f"wss://target.test:{port}/", addresses=["127.0.0.1"])
        await sock.send(SendParams(socket=sock.id, seq=0, kind="t", fin=True, data=b"over tls"))
        got = orjson.loads(await sock.poll(-1, 2000))["messages"]
        assert [m["data"] for m in got] == ["over tls"] and hosts == [f"target.test:{port}"]
        sock.close_upstream(1000, "")
        await wait_for(lambda: sock.conn.lost)


async def test_wss_with_a_certificate_for_another_name_is_upstream_failed(tls_target_ca: trustme.CA) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_target_ca.issue_cert("elsewhere.test").configure_cert(server_ctx)
    port = free_port()

    async def handler(conn: ServerConnection) -> None:
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", port, ssl=server_ctx):
        with pytest.raises(PolysocketError) as exc:
            await open_socket(f"wss://target.test:{port}/", addresses=["127.0.0.1"])
    assert exc.value.code is ErrorCode.UPSTREAM_FAILED and "certificate" in exc.value.message, exc.value.message


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [True, False])
def test_a_frame_the_relay_writes_itself_is_what_websockets_reads_as_a_client_frame(size: int, text: bool) -> None:
    """``Upstream.send`` builds its frames without websockets' Frame: websockets' own parser, as a
    server reads a client, must get the same message back (final, masked, right opcode)."""
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    first = upstream.client_frame(data, text)
    second = upstream.client_frame(data, text)
    for raw in (first, second):
        reader = StreamReader()
        reader.feed_data(raw)
        parser = Frame.parse(reader.read_exact, mask=True)
        with pytest.raises(StopIteration) as done:
            next(parser)
        frame = done.value.value
        assert frame.fin and frame.opcode is (Opcode.TEXT if text else Opcode.BINARY) and frame.data == data
        assert not reader.buffer  # nothing left over
    assert first[-size - 4:-size or None] != second[-size - 4:-size or None]  # a fresh masking key each time


def test_a_forked_process_does_not_reuse_the_parents_masking_keys() -> None:
    """The key pool is process state: a child forked with part of it left must not take the same
    keys as the parent (RFC 6455 5.3: keys must not be predictable from earlier ones)."""
    import os

    upstream._mask_key()  # the pool is filled, most of it left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next 16 keys, then out without pytest's teardown
        try:
            os.write(write, b"".join(upstream._mask_key() for _ in range(16)))
        finally:
            os._exit(0)
    os.close(write)
    try:
        child = b""
        while len(child) < 64:
            chunk = os.read(read, 64 - len(child))
            if not chunk:
                break
            child += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    parent = b"".join(upstream._mask_key() for _ in range(16))
    assert len(child) == 64 and child != parent


@pytest.mark.parametrize("status", [403, 500])
async def test_a_refused_open_lets_go_of_its_upstream_without_the_cycle_collector(status: int) -> None:
    """A target refusing the handshake (``InvalidStatus``) must not leave the Upstream in a cycle
    (Upstream -> protocol -> ``handshake_exc`` -> its traceback -> ``handshake()``'s frame -> the
    Upstream): every failed open would then wait for a full collection. Collector off, then no
    Upstream may be left once the connection is gone."""

    def refuse(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(status, "no\n")

    port = free_port()
    async with serve(echo_into_nothing, "127.0.0.1", port, process_request=refuse):
        table = SocketTable(RelayConfig(fqdn="n.localhost"), RelayMetrics())
        gc.collect()
        gc.disable()
        try:
            for i in range(3):
                req = EstablishRequest(id=f"r{i}", socket=f"{i}" * 32, target=f"ws://127.0.0.1:{port}/",
                                       protocols=[], expires_at_ms=0, token_id="tok")
                with pytest.raises(PolysocketError) as exc:
                    await table.open(req, table.ledger.take(req.id, req.token_id))
                assert exc.value.code is ErrorCode.UPSTREAM_FAILED and str(status) in exc.value.message
                del exc
            for _ in range(20):  # the aborted transports' connection_lost
                await asyncio.sleep(0.01)
            left = [o for o in gc.get_objects() if type(o) is upstream.Upstream]
            assert left == [], f"{len(left)} Upstream objects held by a cycle"
        finally:
            gc.enable()


async def echo_into_nothing(conn: ServerConnection) -> None:
    await conn.wait_closed()
