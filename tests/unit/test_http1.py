"""relay_node.edge.http1 in process, in the style of uvicorn's protocol tests: a transport double records
what the protocol writes, the test feeds bytes into ``data_received``. No sockets, no servers, so
every edge (a request split byte by byte, a client that stops reading, a connection lost while an
answer is pending) is exact and fast."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest

from polysocket_core.errors import ErrorCode, PolysocketError
from relay_node.edge.endpoints import RelayEndpoints
from relay_node.edge.http1 import (
    Answer,
    BadTarget,
    Connections,
    Limits,
    ProtocolRequest,
    RelayHTTPProtocol,
    split_target,
)
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets.table import SocketTable
from tests.support.http1 import GET, OK, Answerer, MockTransport, make, settle

SOCKET_ID = "NlXHq0vw3AbCdEfGhIjKlMnOpQrStUvW"  # the shape of a socket id: 32 URL-safe base64 chars


async def test_simple_get_keeps_the_connection() -> None:
    proto, tr, ans, conns = make()
    proto.data_received(b"GET /send?socket=abc&seq=0&d=hi HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert ans.calls == [("/send", b"socket=abc&seq=0&d=hi", "GET", b"")]
    assert tr.buffer.startswith(b"HTTP/1.1 200 OK\r\ndate: ")
    assert tr.buffer.endswith(b"content-length: 11\r\n\r\n{\"ok\":true}")
    assert not tr.closed and proto in conns.open


async def test_keep_alive_serves_consecutive_requests() -> None:
    proto, tr, _, _ = make()
    for _ in range(3):
        proto.data_received(GET)
        await settle()
    assert tr.statuses() == [200, 200, 200] and not tr.closed


async def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    proto, tr, ans, _ = make()
    ans.hold()
    proto.data_received(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)))
    await settle()
    assert [c[0] for c in ans.calls] == ["/p0"] and tr.buffer == b""
    ans.release()
    await settle()
    assert [c[0] for c in ans.calls] == [f"/p{i}" for i in range(5)]
    assert ans.max_running == 1 and tr.statuses() == [200] * 5


async def test_request_split_across_chunks() -> None:
    proto, tr, ans, _ = make()
    raw = (b"POST /send?socket=abc&seq=1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
           b"Content-Length: 11\r\n\r\nhello world")
    for i in range(len(raw)):
        proto.data_received(raw[i:i + 1])
    await settle()
    assert ans.calls == [("/send", b"socket=abc&seq=1", "POST", b"hello world")]
    assert tr.statuses() == [200]


async def test_chunked_body_and_expect_continue() -> None:
    proto, tr, ans, _ = make()
    proto.data_received(b"POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                        b"Expect: 100-continue\r\n\r\n")
    assert tr.buffer == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.data_received(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    await settle()
    assert ans.calls[0][3] == b"hello world"


@pytest.mark.parametrize("size", [60_000, 66_000, 100_000, 128 * 1024 - 100])
async def test_long_url_under_the_limit_reaches_the_endpoint(size: int) -> None:
    """D5: httptools.parse_url stops at 65,535 bytes; the protocol's own limit is what holds."""
    proto, tr, ans, _ = make()
    query = b"d=" + b"x" * (size - 10)
    proto.data_received(b"GET /send?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert ans.calls == [("/send", query, "GET", b"")] and tr.statuses() == [200]


async def test_oversized_url_is_refused_and_not_executed() -> None:
    proto, tr, ans, _ = make(max_url_bytes=1000)
    proto.data_received(b"GET /send?d=" + b"x" * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    await settle()
    assert tr.statuses() == [414] and tr.closed and ans.calls == []
    assert orjson.loads(tr.buffer.split(b"\r\n\r\n", 1)[1])["error"] == "payload_too_large"
    proto.data_received(GET)  # whatever still arrives is ignored
    await settle()
    assert ans.calls == []


async def test_oversized_headers_are_refused_and_not_executed() -> None:
    """D6: the refused request used to run once httptools reached the end of its message."""
    proto, tr, ans, _ = make(max_header_bytes=1000)
    proto.data_received(b"GET /send?socket=abc&seq=0&d=leaked HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 1000
                        + b"\r\n\r\n" + GET)
    await settle()
    assert tr.statuses() == [431] and tr.closed and ans.calls == []


async def test_oversized_headers_split_across_reads_are_not_executed() -> None:
    proto, tr, ans, _ = make(max_header_bytes=1000)
    proto.data_received(b"GET /send?d=leaked HTTP/1.1\r\nX-Big: " + b"b" * 600 + b"\r\n")
    proto.data_received(b"X-Big2: " + b"b" * 600 + b"\r\n")
    proto.data_received(b"\r\n")
    await settle()
    assert tr.statuses() == [431] and ans.calls == []


@pytest.mark.parametrize("unfinished", [b"X-Big: ", b"X-Big-"], ids=["value", "name"])
async def test_a_header_that_never_ends_is_refused_at_the_limit(unfinished: bytes) -> None:
    """httptools holds an unfinished header without reporting it: the reads that only grow it are
    counted, so it is refused once over the limit (at most one read late), not held until the
    keep-alive timeout however large it grows."""
    proto, tr, ans, _ = make(max_header_bytes=1000)
    proto.data_received(b"GET /send?d=leaked HTTP/1.1\r\nHost: x\r\n" + unfinished + b"b" * 300)
    sent = 0
    while not tr.closed:
        assert sent <= 1000, "not refused at the limit"
        proto.data_received(b"b" * 100)
        sent += 100
    assert sent > 1000 - 300 - 100  # not before the limit either (the first read is not counted)
    assert tr.statuses() == [431] and ans.calls == []
    assert orjson.loads(tr.buffer.split(b"\r\n\r\n", 1)[1])["error"] == "payload_too_large"


async def test_headers_arriving_slowly_under_the_limit_are_served() -> None:
    """A read that completes a header starts the count again: many small headers, each split over
    reads, add up only through the completed ones."""
    proto, tr, ans, _ = make(max_header_bytes=1000)
    proto.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    for i in range(9):  # 9 x ~100 bytes of headers, each value in three reads
        proto.data_received(b"X-H%d: " % i + b"a" * 30)
        proto.data_received(b"a" * 30)
        proto.data_received(b"a" * 30 + b"\r\n")
    proto.data_received(b"\r\n" + GET)
    await settle()
    assert tr.statuses() == [200, 200] and not tr.closed
    assert [c[0] for c in ans.calls] == ["/healthz", "/healthz"]


async def test_body_over_the_limit_is_413_before_the_endpoint() -> None:
    proto, tr, ans, _ = make(max_body_bytes=10)
    proto.data_received(b"GET /send?d=x HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world" + GET)
    await settle()
    assert tr.statuses() == [413, 200] and [c[0] for c in ans.calls] == ["/healthz"]
    assert b"access-control-allow-origin: *" in tr.buffer  # a CORS client can read why


@pytest.mark.parametrize("target", [b"http://[::1/x", b"ftp://h/send", b"/%ff%fe"])
async def test_unroutable_target_is_typed_400(target: bytes) -> None:
    proto, tr, ans, _ = make()
    proto.data_received(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    await settle()
    assert tr.statuses() == [400, 200] and [c[0] for c in ans.calls] == ["/healthz"]
    assert orjson.loads(tr.buffer.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["error"] == "bad_request"


@pytest.mark.parametrize("raw", [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
])
async def test_malformed_request_is_400_and_closes(raw: bytes) -> None:
    proto, tr, ans, _ = make()
    proto.data_received(raw)
    await settle()
    assert tr.statuses() == [400] and tr.closed and ans.calls == []


async def test_connection_close_is_honoured_and_later_bytes_ignored() -> None:
    proto, tr, ans, _ = make()
    proto.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await settle()
    assert tr.closed and b"connection: close\r\n" in tr.buffer
    proto.data_received(b"GET /b HTTP/1.1\r\n\r\n")
    await settle()
    assert [c[0] for c in ans.calls] == ["/a"]


async def test_http10_closes_after_the_answer() -> None:
    proto, tr, _, _ = make()
    proto.data_received(b"GET /healthz HTTP/1.0\r\n\r\n")
    await settle()
    assert tr.statuses() == [200] and tr.closed


async def test_pause_writing_holds_answers_and_reading() -> None:
    """A client that does not read its answers: stop answering and reading until it does."""
    proto, tr, ans, _ = make(max_pipelined=4)
    proto.pause_writing()
    assert tr.read_paused
    proto.data_received(GET * 4)
    await settle()
    assert ans.calls == [] and tr.buffer == b""
    proto.resume_writing()
    await settle()
    assert tr.statuses() == [200] * 4 and not tr.read_paused


async def test_deep_pipeline_pauses_reading_then_resumes() -> None:
    proto, tr, ans, _ = make(max_pipelined=4)
    ans.hold()
    proto.data_received(GET * 5)  # one answering, four queued
    await settle()
    assert tr.read_paused
    ans.release()
    await settle()
    assert tr.statuses() == [200] * 5 and not tr.read_paused


async def test_runaway_pipeline_is_cut_and_the_queue_dropped() -> None:
    proto, tr, ans, _ = make(max_pipelined=2, max_queued=3)
    ans.hold()
    proto.data_received(GET * 10)
    await settle()
    assert tr.buffer == b"" and not tr.closed  # the refusal waits for the answer in progress
    ans.release()
    await settle()
    assert tr.statuses() == [200, 429] and tr.closed
    assert len(ans.calls) == 1  # only the request already being answered ran


@pytest.mark.parametrize(("raw", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /" + b"x" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
])
async def test_a_refusal_behind_an_answer_in_progress_comes_after_it(raw: bytes, status: int) -> None:
    """Answers are read in order: a refusal written while an earlier request is being answered
    would read as that request's answer (a send that was executed would look refused)."""
    proto, tr, ans, _ = make(max_url_bytes=100)
    ans.hold()
    proto.data_received(GET)
    await settle()
    proto.data_received(raw)
    await settle()
    assert tr.buffer == b"" and not tr.closed
    ans.release()
    await settle()
    assert tr.statuses() == [200, status] and tr.closed and len(ans.calls) == 1
    first, second = tr.buffer.split(b"HTTP/1.1 ")[1:]
    assert b"connection: close" not in first and b"connection: close" in second


@pytest.mark.parametrize("waits", [False, True])
async def test_an_answer_whose_awaited_future_is_cancelled_is_a_500(waits: bool) -> None:
    """A cancelled future inside the endpoint (not a cancelled answer task) is an error like any
    other: the connection was left busy without an answer."""
    async def answer(path: str, query: bytes, req: ProtocolRequest) -> Answer:
        fut = asyncio.get_running_loop().create_future()
        if waits:
            asyncio.get_running_loop().call_soon(fut.cancel)
        else:
            fut.cancel()
        await fut
        return OK

    proto, tr, _, conns = make(answer=answer)
    proto.data_received(GET * 2)
    await settle()
    assert tr.statuses() == [500, 500] and not proto.busy and not conns.tasks


async def test_shutdown_cancelling_a_waiting_answer_writes_nothing() -> None:
    proto, tr, ans, conns = make()
    ans.hold()
    proto.data_received(GET)
    await settle()
    assert conns.tasks
    conns.abort()
    await settle()
    assert not conns.tasks and tr.closed and tr.buffer == b""


async def test_connection_lost_mid_answer() -> None:
    proto, tr, ans, conns = make()
    ans.hold()
    proto.data_received(GET * 3)
    await settle()
    proto.connection_lost(ConnectionResetError())
    assert proto not in conns.open
    ans.release()
    await settle()
    assert tr.buffer == b"" and len(ans.calls) == 1 and not conns.tasks


async def test_half_close_answers_what_was_sent_then_closes() -> None:
    proto, tr, ans, _ = make()
    ans.hold()
    proto.data_received(GET * 2)
    assert proto.eof_received() is True
    ans.release()
    await settle()
    assert tr.statuses() == [200, 200] and tr.closed and b"connection: close" in tr.buffer.rsplit(b"HTTP/1.1", 1)[1]


async def test_shutdown_closes_idle_now_and_busy_after_the_answer() -> None:
    _, idle_tr, _, conns = make()
    busy = RelayHTTPProtocol(Answerer(), Limits(), conns)
    busy_tr = MockTransport()
    busy.connection_made(busy_tr)  # type: ignore[arg-type]
    assert isinstance(busy.answer, Answerer)
    busy.answer.hold()
    busy.data_received(GET)
    await settle()
    conns.shutdown()
    assert idle_tr.closed and not busy_tr.closed
    busy.answer.release()
    await settle()
    assert busy_tr.statuses() == [200] and busy_tr.closed


async def test_keep_alive_timeout_closes_an_idle_connection() -> None:
    _, tr, _, _ = make(keep_alive_s=0.01)
    await asyncio.sleep(0.05)
    assert tr.closed


async def test_a_raising_answer_is_a_500_with_a_bounded_redacted_log(caplog: pytest.LogCaptureFixture) -> None:
    async def boom(path: str, query: bytes, req: ProtocolRequest) -> Answer:
        raise RuntimeError(f"lost {SOCKET_ID} " + "x" * 100_000)

    proto, tr, _, _ = make(answer=boom)
    with caplog.at_level(logging.ERROR, logger="polysocket.relay"):
        proto.data_received(GET)
        await settle()
    assert tr.statuses() == [500] and not tr.closed
    text = caplog.text
    assert SOCKET_ID not in text and len(text) < 6000


@pytest.mark.parametrize("waits", [False, True])
async def test_an_answer_that_fails_while_being_written_is_a_500_not_a_hung_connection(
        waits: bool, caplog: pytest.LogCaptureFixture) -> None:
    """An exception after the endpoint returned (a stream body that cannot start) still answers:
    the connection was left busy with nothing written and no keep-alive timer, forever."""

    class Broken:
        lost_calls = 0

        def start(self, sink: Any) -> tuple[bytes, bool]:
            raise RuntimeError("cannot start")

        def stop(self) -> None: ...

        def lost(self) -> None:
            Broken.lost_calls += 1

    async def answer(path: str, query: bytes, req: ProtocolRequest) -> Answer:
        if waits:
            await asyncio.sleep(0)
        return 200, [], Broken()

    proto, tr, _, conns = make(answer=answer)
    with caplog.at_level(logging.ERROR, logger="polysocket.relay"):
        proto.data_received(GET * 2)
        await settle()
    assert tr.statuses() == [500] and tr.closed and b"connection: close" in tr.buffer
    assert Broken.lost_calls == 1 and not proto.busy and proto.stream is None and not conns.tasks
    assert "cannot start" in caplog.text


async def test_endpoint_internal_error_log_never_holds_the_socket_id(caplog: pytest.LogCaptureFixture) -> None:
    """D5: the endpoint's own catch-all logs neither the URL nor a socket id in full."""
    cfg = RelayConfig(fqdn="n.localhost")
    table = SocketTable(cfg, RelayMetrics())

    class Broken:  # not a socket: interpreted, its claim fails; compiled (relay_node/compiled.py), its type check
        @property
        def claim_by(self) -> float:
            raise KeyError(SOCKET_ID)

    table.sockets[SOCKET_ID] = Broken()  # type: ignore[assignment]
    endpoints = RelayEndpoints(cfg, table, table.metrics)
    proto, tr, _, _ = make(answer=endpoints.answer)
    with caplog.at_level(logging.ERROR, logger="polysocket.relay"):
        proto.data_received(b"GET /close?socket=" + SOCKET_ID.encode() + b"&pad=" + b"p" * 70_000
                            + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
    assert tr.statuses() == [500]
    assert "/close" in caplog.text and SOCKET_ID not in caplog.text and len(caplog.text) < 6000


async def test_endpoint_errors_stay_typed() -> None:
    cfg = RelayConfig(fqdn="n.localhost")
    table = SocketTable(cfg, RelayMetrics())
    proto, tr, _, _ = make(answer=RelayEndpoints(cfg, table, table.metrics).answer)
    proto.data_received(b"GET /poll?socket=" + SOCKET_ID.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert tr.statuses() == [HTTP_UNKNOWN_SOCKET, 404]


HTTP_UNKNOWN_SOCKET = PolysocketError(ErrorCode.UNKNOWN_SOCKET, "").status


@pytest.mark.parametrize(("target", "expected"), [
    (b"/send?a=1", ("/send", b"a=1")),
    (b"/send", ("/send", b"")),
    (b"/se%6Ed?x=%41", ("/send", b"x=%41")),
    (b"/send?a=1#frag", ("/send", b"a=1")),
    (b"http://h.example:8101/poll?ack=3", ("/poll", b"ack=3")),
    (b"HTTPS://[::1]:8101", ("/", b"")),
    (b"*", ("*", b"")),
])
def test_split_target(target: bytes, expected: tuple[str, bytes]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize("target", [b"", b"send", b"ftp://h/x", b"http:///x", b"http://[::1/x", b"/%ff", b"/\xff"])
def test_split_target_refuses(target: bytes) -> None:
    with pytest.raises(BadTarget):
        split_target(target)


class ManualClock:
    """The event loop as the protocol sees it, with its time and timers in the test's hands (the
    keep-alive is about when things happen: the test moves the clock instead of sleeping)."""

    class Timer:
        def __init__(self, when: float, callback: Any, args: tuple[Any, ...]) -> None:
            self.when, self.callback, self.args, self.cancelled = when, callback, args, False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[ManualClock.Timer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any, *args: Any) -> ManualClock.Timer:
        timer = ManualClock.Timer(self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def create_task(self, coro: Any) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while due := [t for t in self.timers if not t.cancelled and t.when <= self.now]:
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            timer.callback(*timer.args)


async def test_the_keep_alive_runs_from_the_last_answer_with_one_timer_for_the_connection() -> None:
    """``lazy-keepalive-timer``: answering arms and cancels no timer; the one armed at the opening
    checks, when it fires, how long the connection has been idle."""
    clock = ManualClock()
    proto = RelayHTTPProtocol(Answerer(), Limits(keep_alive_s=10), Connections(), clock)  # type: ignore[arg-type]
    tr = MockTransport()
    proto.connection_made(tr)  # type: ignore[arg-type]
    [opened] = clock.timers
    for _ in range(3):
        clock.advance(2)
        proto.data_received(GET)
        await settle()
    assert tr.statuses() == [200] * 3 and clock.timers == [opened] and not opened.cancelled  # no timer per answer
    clock.advance(9.9)  # 9.9 s after the last answer (6 s): the timer fired at 10 s and looks again at 16 s
    assert not tr.closed and len(clock.timers) == 1
    clock.advance(0.2)  # 10.1 s after the last answer
    assert tr.closed


async def test_a_busy_connection_is_not_closed_by_the_keep_alive_and_counts_from_its_answer() -> None:
    clock = ManualClock()
    answerer = Answerer()
    proto = RelayHTTPProtocol(answerer, Limits(keep_alive_s=10), Connections(), clock)  # type: ignore[arg-type]
    tr = MockTransport()
    proto.connection_made(tr)  # type: ignore[arg-type]
    answerer.hold()
    proto.data_received(GET)
    await settle()
    clock.advance(30)  # answering for 30 s: the keep-alive does not apply
    assert not tr.closed and not [t for t in clock.timers if not t.cancelled]
    answerer.release()
    await settle()
    assert tr.statuses() == [200]
    clock.advance(9.9)
    assert not tr.closed
    clock.advance(0.2)
    assert tr.closed
