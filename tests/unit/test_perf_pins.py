"""What the relay's performance tricks must keep true, one test per trick of bench/PERF_LEDGER.md
that no other test pinned: the shape that makes the trick pay (one write, no task, no lock, nothing
held) and, where it replaces a library call, that the output is the library's. No timing here: the
gains are measured in bench/ (the ledger links each figure)."""

from __future__ import annotations

import asyncio
import gc
import ssl
import time
from collections.abc import AsyncIterator
from email.utils import formatdate

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from websockets.asyncio.server import ServerConnection, serve

from polysocket_core.control import EstablishRequest
from polysocket_core.wire import SendParams
from relay_node import server
from relay_node.compiled import is_compiled
from relay_node.edge import http1
from relay_node.edge.endpoints import RelayEndpoints
from relay_node.edge.http1 import Answer, ProtocolRequest, StreamSink
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets import socket as socket_module
from relay_node.sockets import upstream
from relay_node.sockets.socket import RelaySocket
from relay_node.sockets.table import SocketTable
from tests.support.http1 import GET, Answerer, MockTransport, make, settle
from tests.support.ports import free_port

SID = "s" * 32


class WriteCountingTransport(MockTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def counting() -> tuple[http1.RelayHTTPProtocol, WriteCountingTransport, Answerer, http1.Connections]:
    proto, _, ans, conns = make()
    tr = WriteCountingTransport()
    proto.connection_made(tr)  # type: ignore[arg-type]
    return proto, tr, ans, conns


# --- the HTTP/1.1 edge ---------------------------------------------------------------------------

async def test_an_answer_is_one_write() -> None:  # one-write-answer
    proto, tr, _, _ = counting()
    proto.data_received(GET)
    await settle()
    assert tr.writes == 1 and tr.statuses() == [200]


async def test_an_answer_that_does_not_wait_runs_without_a_task_one_that_waits_gets_one() -> None:
    proto, tr, ans, conns = counting()  # answer-in-callback
    proto.data_received(GET)
    assert tr.statuses() == [200] and not conns.tasks  # answered inside data_received, no task
    ans.hold()
    proto.data_received(GET)
    assert tr.statuses() == [200] and len(conns.tasks) == 1  # it waits: now in a task
    ans.release()
    await settle()
    assert tr.statuses() == [200, 200] and not conns.tasks


async def test_a_connection_holds_no_request_between_answers() -> None:  # no-request-between
    proto, tr, _, _ = counting()
    proto.data_received(b"GET /send HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 1000 + b"\r\n\r\n")
    await settle()
    assert tr.statuses() == [200]
    assert proto.req is http1._NO_REQUEST and not proto.req.headers


class OpenStream:
    def start(self, sink: StreamSink) -> tuple[bytes, bool]:
        self.sink = sink
        return b": open\n\n", True

    def stop(self) -> None:
        self.sink.end_stream()

    def lost(self) -> None:
        pass


async def test_an_open_stream_holds_no_task() -> None:  # stream-no-task
    stream = OpenStream()
    streaming: Answer = (200, [(b"content-type", b"text/event-stream")], stream)  # type: ignore[assignment]
    proto, tr, ans, conns = counting()
    ans.answer_value = streaming
    proto.data_received(GET)
    await settle()
    assert proto.stream is stream and not conns.tasks
    stream.sink.write_chunk(b"data: 1\n\n")
    stream.stop()
    assert tr.buffer.endswith(b"9\r\ndata: 1\n\n\r\n0\r\n\r\n") and proto.stream is None


def test_a_cached_header_block_is_the_formatted_list_and_only_for_that_object() -> None:  # header-block-cache
    constant = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    http1.register_constant_headers(constant)
    assert http1.cached_block(constant) == http1.header_block(constant) == (
        b"content-type: application/json\r\ncache-control: no-store\r\n")
    other = [(b"content-type", b"text/plain")]
    assert http1.cached_block(other) == b"content-type: text/plain\r\n"  # not registered: formatted


def test_the_date_line_is_the_current_second(monkeypatch: pytest.MonkeyPatch) -> None:  # date-line-cache
    now = [1_800_000_000.2]
    monkeypatch.setattr(http1.time, "time", lambda: now[0])
    first = http1.date_line()
    assert first == b"date: %s\r\n" % formatdate(1_800_000_000, usegmt=True).encode()
    now[0] += 0.7
    assert http1.date_line() is first  # the same second: not rebuilt
    now[0] += 1.0
    assert http1.date_line() == b"date: %s\r\n" % formatdate(1_800_000_001, usegmt=True).encode()


def test_serve_raises_the_young_generation_threshold(monkeypatch: pytest.MonkeyPatch) -> None:  # gc-gen0
    class Stopped:
        def __init__(self, *args: object) -> None:
            pass

        async def serve(self) -> int:
            return 0

    monkeypatch.setattr(server, "RelayServer", Stopped)
    before = gc.get_threshold()
    try:
        assert server.serve(None, "127.0.0.1", 0, None) == 0  # type: ignore[arg-type]
        assert gc.get_threshold() == (server.GC_GEN0_THRESHOLD, *before[1:])
    finally:
        gc.set_threshold(*before)


def test_the_relays_counters_render_as_prometheus_clients_own() -> None:  # plain-metrics
    metrics = RelayMetrics()
    metrics.frames_in.inc(3)
    registry = CollectorRegistry()
    reference = Counter("polysocket_frames_to_target", "Frames sent from clients to targets", registry=registry)
    reference.inc(3)

    def samples(text: bytes) -> set[bytes]:
        return {line for line in text.splitlines() if line.startswith(b"polysocket_frames_to_target")
                and b"_created" not in line}

    ours = samples(metrics.render())
    assert ours == samples(generate_latest(registry)) and ours


# --- the socket and its upstream -----------------------------------------------------------------

@pytest.fixture
async def target_url() -> AsyncIterator[str]:
    port = free_port()

    async def sink(conn: ServerConnection) -> None:
        async for _ in conn:
            pass

    async with serve(sink, "127.0.0.1", port):
        yield f"ws://127.0.0.1:{port}/"


CONFIG = RelayConfig(fqdn="n.localhost")


async def open_socket(url: str) -> tuple[SocketTable, RelaySocket]:
    table = SocketTable(CONFIG, RelayMetrics())
    req = EstablishRequest(id="r", socket=SID, target=url, protocols=[],
                           expires_at_ms=int(time.time() * 1000) + 10_000, token_id="tok")
    return table, await table.open(req, table.ledger.take(req.id, req.token_id))


async def test_sends_that_do_not_contend_create_no_lock(target_url: str) -> None:  # lockless-send
    _, sock = await open_socket(target_url)
    for seq in range(3):
        await sock.send(SendParams(socket=SID, seq=seq, kind="t", fin=True, data=b"x"))
    assert sock._write_lock is None and sock._sent_through == 2
    sock.close_upstream(1000, "")


async def test_a_waiting_poll_holds_neither_its_query_nor_its_headers(target_url: str) -> None:
    table, sock = await open_socket(target_url)  # poll-sheds-request
    endpoints = RelayEndpoints(CONFIG, table, RelayMetrics())
    req = ProtocolRequest()
    req.method, req.headers = "GET", [(b"user-agent", b"u" * 500)]
    waiting = asyncio.ensure_future(endpoints.answer("/poll", f"socket={SID}&ttl=5000".encode(), req))
    await asyncio.sleep(0.05)
    assert not waiting.done() and sock.receiver is not None and req.headers == []
    sock.close_upstream(1000, "")
    status, _, _ = await asyncio.wait_for(waiting, 5)
    assert status == 200


async def test_a_get_send_answers_with_the_sockets_own_coroutine(target_url: str) -> None:  # send-no-coroutine
    table, sock = await open_socket(target_url)
    endpoints = RelayEndpoints(CONFIG, table, RelayMetrics())
    req = ProtocolRequest()
    req.method, req.headers = "GET", []
    pending = endpoints.send(req, {"socket": SID, "seq": "0", "d": "hi"})
    if is_compiled(socket_module):  # mypyc's coroutines are objects of a class per function
        assert type(pending).__name__ == "send_RelaySocket_gen"
    else:
        assert getattr(pending, "cr_code", None) is RelaySocket.send.__code__  # no coroutine of the endpoint's
    await pending
    status, _, body = await endpoints.answer("/send", f"socket={SID}&seq=1&d=yo".encode(), req)
    assert (status, body) == (200, b'{"ok":true}') and sock._sent_through == 1
    sock.close_upstream(1000, "")


def test_every_wss_upstream_shares_one_verifying_context() -> None:  # tls-context-shared
    ctx = upstream.tls_context()
    assert upstream.tls_context() is ctx
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname


# --- the echo target -----------------------------------------------------------------------------

def test_the_echo_target_runs_on_uvloop_where_it_is_built() -> None:  # echo-uvloop
    import uvloop  # the dev extra installs it on Linux, where the tests run

    from polysocket_cli.echo import loop_factory

    assert loop_factory() is uvloop.new_event_loop
