"""``GET /stream`` end to end (docs/protocol.md): a real Valkey, router, relay and echo target, the
stream read over raw connections (tests/support/sse_client.py) so every byte of the body is checked.

The relay here has small bounds (``--stream-bytes 32768``, ``--buffer-bytes 8192``) so that a
stream ends by its byte budget, and the reader parks on the buffer bound, within a few messages."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from polysocket_cli.processes import Proc, Stack, free_port
from polysocket_core.errors import ErrorCode, PolysocketError
from tests.support.sse_client import SSEStream, StreamEnded
from tests.support.wire_client import Conn, connect

pytestmark = pytest.mark.stack

STREAM_BYTES = 32768
BUFFER_BYTES = 8192


@dataclass
class StreamStack:
    stack: Stack
    router_url: str
    relay: Proc
    token: str
    target: str

    async def connect(self, http: httpx.AsyncClient) -> Conn:
        return await connect(http, self.router_url, self.target, token=self.token)

    async def stream(self, c: Conn, headers: dict[str, str] | None = None, **params: Any) -> SSEStream:
        return await SSEStream.open("127.0.0.1", self.relay.port, c.fqdn, {"socket": c.socket, **params}, headers)


@pytest.fixture(scope="module")
def sstack() -> Iterator[StreamStack]:
    s = Stack()
    try:
        s.start_valkey()
        relay = s.start_relay("node1", extra=["--stream-bytes", str(STREAM_BYTES), "--stream-seconds", "20",
                                              "--buffer-bytes", str(BUFFER_BYTES)])
        router = s.start_router()
        token = s.create_token()
        echo = s.start_echo()
        yield StreamStack(s, f"http://127.0.0.1:{router.port}", relay, token, f"ws://127.0.0.1:{echo.port}/")
    finally:
        s.stop()



async def test_events_carry_seq_ids_and_poll_fragments(sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    s = await sstack.stream(c)
    assert s.status == 200
    assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert s.headers["transfer-encoding"] == "chunked"
    assert s.headers["cache-control"] == "no-store"
    assert s.headers["x-accel-buffering"] == "no"
    assert s.headers["access-control-allow-origin"] == "*"
    first = await s.next()
    assert (first.kind, first.text) == ("comment", "ok")
    await c.send_text("hello")
    await c.send_text("wörld \u2028")
    got = await s.events(2)
    assert [(e.id, e.data) for e in got] == [(0, {"seq": 0, "type": "text", "data": "hello"}),
                                            (1, {"seq": 1, "type": "text", "data": "wörld \u2028"})]
    await s.close()
    await c.close()


async def metric(http: httpx.AsyncClient, port: int, name: str) -> float:
    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def eventually_open_streams(http: httpx.AsyncClient, sstack: StreamStack, expected: float) -> None:
    """The relay's open-streams gauge reaches ``expected`` (bounded wait: a disconnect is seen
    by the relay a moment after the client made it)."""
    for _ in range(200):
        if await metric(http, sstack.relay.port, "polysocket_open_streams") == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"open streams never reached {expected}")


async def test_heartbeat_comment_when_nothing_is_written(sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    s = await sstack.stream(c, ttl=1000)  # the floor (wire.MIN_STREAM_TTL_MS)
    assert (await s.next()).text == "ok"
    beat = await s.next()
    assert (beat.kind, beat.text) == ("comment", "hb")
    await c.send_text("after")
    items = [await s.next() for _ in range(3)]  # more heartbeats may come in between
    assert any(i.kind == "event" and i.data["data"] == "after" for i in items)
    await s.close()
    await c.close()


async def test_pad_opens_with_the_2kib_prelude(sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    s = await sstack.stream(c, pad=1)
    first = await s.next()
    assert first.kind == "comment" and first.text == " " * 2048
    await s.close()
    await c.close()


async def test_byte_budget_ends_the_stream_and_resuming_loses_and_repeats_nothing(
        sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    payload = "y" * 3000
    s = await sstack.stream(c)
    seen: list[int] = []
    written = 0
    while not s.complete:
        assert (await c.send_text(payload, ack=seen[-1] if seen else -1))["ok"]
        (e,) = await s.events(1)  # the stream does not end before the budget is spent
        seen.append(e.id)
        fragment = b'{"seq":%d,"type":"text","data":"%s"}' % (e.id, payload.encode())
        written += len(b"id: %d\ndata: %s\n\n" % (e.id, fragment))
        if written > STREAM_BYTES:  # the message that took the stream past its budget is its last
            assert await s.rest() == [] and s.complete and not s.cut
    assert seen == list(range(len(seen))) and len(seen) == STREAM_BYTES // 3000 + 1
    assert (await c.send_text(payload))["ok"]  # nothing acked it: the next stream has it
    s2 = await sstack.stream(c, ack=seen[-1])
    assert (await s2.next()).text == "ok"
    rest = await s2.events(1)
    assert rest[0].id == seen[-1] + 1 and rest[0].data["data"] == payload
    await s2.close()
    await c.close()


async def test_last_event_id_acks_and_resumes(sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    await c.send_text("flood:10")
    s = await sstack.stream(c)
    assert [e.id for e in await s.events(10)] == list(range(10))
    await s.close()
    # EventSource reconnects with Last-Event-ID: it wins over a lower ack, and frees what it acks.
    s2 = await sstack.stream(c, headers={"Last-Event-ID": "6"}, ack=2)
    assert [e.id for e in await s2.events(3)] == [7, 8, 9]
    await s2.close()
    # A malformed Last-Event-ID is ignored, not refused; the acked messages stay acked.
    s3 = await sstack.stream(c, headers={"Last-Event-ID": "nope"})
    assert [e.id for e in await s3.events(3)] == [7, 8, 9]
    await s3.close()
    await c.close()


async def test_a_newer_stream_or_poll_ends_the_current_stream(sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    s1 = await sstack.stream(c)
    assert (await s1.next()).text == "ok"
    s2 = await sstack.stream(c)
    assert await s1.rest() == [] and s1.complete  # ended with the terminal chunk
    assert (await s2.next()).text == "ok"
    poll = asyncio.ensure_future(c.poll(ttl=200))
    assert await s2.rest() == [] and s2.complete
    assert (await poll)["messages"] == [{"type": "heartbeat"}]
    # and a stream answers a waiting poll at once, as a newer poll does
    waiting = asyncio.ensure_future(c.poll(ttl=30000))
    await asyncio.sleep(0.5)  # (ordering only: the poll is waiting at the relay before the stream opens)
    s3 = await sstack.stream(c)
    assert (await waiting)["messages"] == [{"type": "heartbeat"}]
    await c.send_text("to the stream")
    assert (await s3.events(1))[0].data["data"] == "to the stream"
    await s3.close()
    await c.close()


async def test_acks_on_sends_keep_a_long_stream_flowing_past_the_buffer_bound(
        sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    n = 600  # ~20 KB of fragments: past the 8 KiB buffer bound, within the 32 KiB stream budget
    s = await sstack.stream(c)
    await c.send_text(f"flood:{n}")
    got: list[str] = []
    last = -1
    fragment_bytes = 0
    while len(got) < n:
        (e,) = await s.events(1)
        assert e.id == last + 1
        last = e.id
        fragment_bytes += len(e.data["data"]) + 30
        if e.data["data"] != "x":
            got.append(e.data["data"])
        if e.id % 50 == 49:
            assert (await c.send_text("x", ack=last))["ok"]  # frees the buffer: the reader goes on
    assert got == [str(i) for i in range(n)]
    assert fragment_bytes > 2 * BUFFER_BYTES and not s.complete  # one stream carried it all
    await s.close()
    await c.close()


async def test_batch_send_carries_an_ack(sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    await c.send_text("one")
    s = await sstack.stream(c)
    assert (await s.events(1))[0].id == 0
    await s.close()
    r = await c.get("/send", {"batch": '[[1,"t",1,"two"]]', "ack": 0})
    assert r.json() == {"ok": True}
    s2 = await sstack.stream(c)
    assert [e.data["data"] for e in await s2.events(1)] == ["two"]  # "one" was acked by the batch
    await s2.close()
    await c.close()


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"ttl": 0}, 400, "bad_request"),
    ({"cb": "cb1"}, 400, "bad_request"),
    ({"ack": "x"}, 400, "bad_request"),
    ({"pad": 2}, 400, "bad_request"),
])
async def test_errors_before_the_stream_are_json(sstack: StreamStack, http: httpx.AsyncClient,
                                               params: dict[str, Any], status: int, code: str) -> None:
    c = await sstack.connect(http)
    s = await sstack.stream(c, **params)
    assert s.status == status and s.headers["content-type"] == "application/json"
    assert s.headers["access-control-allow-origin"] == "*"
    body = await s.read_json_body()
    assert body["ok"] is False and body["error"] == code
    await s.close()
    await c.close()


async def test_unknown_socket_is_a_json_error(sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    s = await SSEStream.open("127.0.0.1", sstack.relay.port, c.fqdn, {"socket": "A" * 32})
    assert s.status == PolysocketError(ErrorCode.UNKNOWN_SOCKET, "").status
    assert s.headers["content-type"] == "application/json"
    assert (await s.read_json_body())["error"] == "unknown_socket"
    await s.close()
    await c.close()


async def test_close_message_ends_the_stream_and_its_ack_frees_the_socket(
        sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    s = await sstack.stream(c)
    await c.send_text("close:4001:bye")
    items = await s.rest()
    assert [(i.id, i.data) for i in items if i.kind == "event"] == [
        (0, {"seq": 0, "type": "close", "code": 4001, "reason": "bye"})]
    assert s.complete
    s2 = await sstack.stream(c, ack=0)  # acks the close: the socket is freed, the stream ends empty
    assert s2.status == 200 and [i.text for i in await s2.rest()] == ["ok"] and s2.complete
    assert (await c.poll(ttl=0))["error"] == "unknown_socket"


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_client_disconnect_mid_stream_then_resume(sstack: StreamStack, http: httpx.AsyncClient,
                                                        how: str) -> None:
    c = await sstack.connect(http)
    before = await metric(http, sstack.relay.port, "polysocket_open_streams")
    s = await sstack.stream(c)
    await c.send_text("flood:5")
    got = await s.events(3)
    if how == "abort":
        s.writer.transport.abort()
    else:
        await s.close()
    await eventually_open_streams(http, sstack, before)  # the receiver was detached
    await c.send_text("more")
    s2 = await sstack.stream(c, ack=got[-1].id)  # nothing was acked by the cut stream's writes
    assert [e.data["data"] for e in await s2.events(3)] == ["3", "4", "more"]
    await s2.close()
    await c.close()


async def test_requests_pipelined_behind_a_stream_are_answered_after_it(
        sstack: StreamStack, http: httpx.AsyncClient) -> None:
    c = await sstack.connect(http)
    reader, writer = await asyncio.open_connection("127.0.0.1", sstack.relay.port)
    writer.write((f"GET /stream?socket={c.socket} HTTP/1.1\r\nHost: {c.fqdn}\r\n\r\n"
                  f"GET /healthz HTTP/1.1\r\nHost: {c.fqdn}\r\n\r\n").encode())
    s = SSEStream(reader, writer)
    await s.read_head()
    assert (await s.next()).text == "ok"
    await c.send_text("x")
    assert (await s.events(1))[0].data["data"] == "x"
    assert (await c.poll(ttl=0, ack=0))["messages"] == [{"type": "heartbeat"}]  # ends the stream
    assert await s.rest() == [] and s.complete
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in head
    await s.close()
    await c.close()


class CuttingProxy:
    """A loopback TCP proxy in front of the relay that forwards each answer's first ``budget``
    bytes (a different budget per connection) and then cuts both connections (RST): most cuts land
    in the middle of an event, some in a chunk-size line or in the headers."""

    def __init__(self, upstream_port: int, seed: int, lo: int, hi: int) -> None:
        self.upstream_port = upstream_port
        self.rng = random.Random(seed)
        self.lo, self.hi = lo, hi
        self.cuts = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", free_port())
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        budget = self.rng.randint(self.lo, self.hi)

        async def up() -> None:
            while data := await creader.read(65536):
                uwriter.write(data)

        async def down() -> None:
            left = budget
            while left > 0:
                data = await ureader.read(min(left, 65536))
                if not data:
                    return
                cwriter.write(data)
                left -= len(data)
                await cwriter.drain()
            self.cuts += 1

        relay_up = asyncio.ensure_future(up())
        try:
            await down()
        except ConnectionError:
            pass
        finally:
            relay_up.cancel()
            cwriter.transport.abort()
            uwriter.transport.abort()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_streams_cut_mid_event_resume_with_every_message_once_in_order(
        sstack: StreamStack, http: httpx.AsyncClient) -> None:
    """The data-path guarantee across many cuts: the client keeps the highest seq it processed,
    drops what it already has, resumes with ``ack``; it ends with every message exactly once."""
    proxy = CuttingProxy(sstack.relay.port, seed=12, lo=380, hi=2500)
    port = await proxy.start()
    c = await sstack.connect(http)
    n = 1500
    await c.send_text(f"flood:{n}")
    processed = -1
    got: list[str] = []
    streams = mid_event = 0
    try:
        while len(got) < n:
            streams += 1
            assert streams < 2000, (len(got), proxy.cuts, mid_event)
            try:
                s = await SSEStream.open("127.0.0.1", port, c.fqdn, {"socket": c.socket, "ack": processed})
            except (asyncio.IncompleteReadError, ConnectionError):
                continue  # cut inside the headers
            try:
                while len(got) < n:
                    item = await s.next()
                    if item.kind != "event" or item.id <= processed:
                        continue  # a repeat of what an earlier, cut stream delivered
                    assert item.id == processed + 1, (item.id, processed)
                    processed = item.id
                    got.append(item.data["data"])
            except StreamEnded:
                if s.cut and s.partial_at_cut:
                    mid_event += 1
            await s.close()
    finally:
        await proxy.stop()
    assert got == [str(i) for i in range(n)]
    print(f"{n} messages across {streams} streams, {proxy.cuts} cut by the proxy, {mid_event} of them mid-event")
    # docs/guarantees.md: "about 80 cuts, most mid-event". The budgets are seeded, so the count is
    # the same every run (80, 78 mid-event, here); the margin is for where the relay's writes split.
    assert 70 <= proxy.cuts <= 90 and mid_event * 2 > proxy.cuts, (proxy.cuts, mid_event)
    await eventually_open_streams(http, sstack, 0)
    await c.close()


async def test_preflight_allows_last_event_id(sstack: StreamStack, http: httpx.AsyncClient) -> None:
    r = await http.request("OPTIONS", f"http://127.0.0.1:{sstack.relay.port}/stream")
    assert r.status_code == 204
    assert "last-event-id" in r.headers["access-control-allow-headers"].split(", ")


async def test_a_draining_relay_ends_open_streams_with_the_close_message(http: httpx.AsyncClient) -> None:
    # SIGTERM with a stream open: the drain closes the socket with 1001 and the stream carries
    # that close, then ends; the client's ack (on a new stream, as it would) frees the socket and
    # the relay exits cleanly, with no stream left open.
    import signal

    s = Stack()
    try:
        s.start_valkey()
        relay = s.start_relay("drainer", extra=["--drain-grace", "0.5", "--stream-seconds", "30"])
        router = s.start_router()
        echo = s.start_echo()
        c = await connect(http, f"http://127.0.0.1:{router.port}", f"ws://127.0.0.1:{echo.port}/",
                          token=s.create_token())
        stream = await SSEStream.open("127.0.0.1", relay.port, c.fqdn, {"socket": c.socket})
        await c.send_text("before")
        (first,) = await stream.events(1)
        assert first.data["data"] == "before"
        relay.signal(signal.SIGTERM)
        items = await stream.rest(timeout=15)
        events = [i.data for i in items if i.kind == "event"]
        assert events == [{"seq": 1, "type": "close", "code": 1001, "reason": "relay draining"}]
        assert stream.complete  # the terminal chunk, not a cut connection
        resumed = await SSEStream.open("127.0.0.1", relay.port, c.fqdn, {"socket": c.socket, "ack": 1})
        assert [i.text for i in await resumed.rest()] == ["ok"] and resumed.complete
        assert relay.popen.wait(15) == 0
    finally:
        s.stop()
