"""Issue 21's defects, reproduced against real processes (a relay, a router and Valkey on loopback;
``polysocket echo`` as the target): each test is the attack that found the defect, and asserts the
figure docs/guarantees.md states for its fix.

* D2 heartbeats spend a stream's byte budget (an unread stream's heartbeats were unbounded), and
  ``--max-poll-ttl 0`` is refused at start-up (it made every stream heartbeat in a busy loop).
* D3 after receiver abuse (stalled streams each holding a large, encoding-inflated message in its
  connection's write buffer) an idle relay gives its memory back.
* D5 ``100 Continue`` is not written inside an open stream's chunked body.
* D6 an ``ack`` above the last seq queued is refused and loses nothing, a ``Last-Event-ID`` above it
  is ignored.

(D1, the per-socket receive-side bound, comes with the reshaped receivers.)

The echo's defects (D4) are in test_echo_faults.py.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from polysocket_cli.processes import Proc, Stack
from polysocket_core import sse
from relay_node.sockets import memory
from tests.support.wire_client import Conn, connect

from .conftest import MiB, Profile, rss_bytes, wait_until
from .rawhttp import read_chunked

pytestmark = [pytest.mark.stack, pytest.mark.faults]


class Relay:
    """A relay with a router in front and the echo as the target."""

    def __init__(self, stack: Stack, relay: Proc, router: str, echo: str, token: str) -> None:
        self.stack, self.relay, self.router, self.echo, self.token = stack, relay, router, echo, token

    async def connect(self, http: httpx.AsyncClient) -> Conn:
        return await connect(http, self.router, self.echo, token=self.token)


async def start(stack: Stack, extra: list[str] | None = None) -> Relay:
    relay = stack.start_relay("r3", extra=extra)
    router = f"http://127.0.0.1:{stack.start_router().port}"
    echo = f"ws://127.0.0.1:{stack.start_echo().port}/"
    return Relay(stack, relay, router, echo, stack.create_token())


async def open_raw(conn: Conn, rcvbuf: int = 0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the socket's relay; ``rcvbuf``: a small receive buffer, for a client
    that reads nothing and should hold little in its kernel."""
    port = int(conn.fqdn.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


def stream_request(conn: Conn, query: str = "", headers: str = "") -> bytes:
    return (f"GET /stream?socket={conn.socket}{query} HTTP/1.1\r\nhost: {conn.fqdn}\r\n{headers}\r\n"
            ).encode("latin-1")


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0): what a client that vanishes leaves the relay."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)


def events(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]


@pytest.fixture
async def relay(own_stack: Stack) -> AsyncIterator[Relay]:
    yield await start(own_stack)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


# D2: heartbeats are bounded by the byte budget; the busy-loop setting is refused


async def test_d2_an_unread_streams_heartbeats_spend_its_byte_budget(own_stack: Stack,
                                                                     http: httpx.AsyncClient) -> None:
    budget = 4 * len(sse.HEARTBEAT)
    r = await start(own_stack, ["--stream-bytes", str(budget)])
    c = await r.connect(http)  # nothing queued: the stream has nothing but heartbeats to write
    reader, writer = await open_raw(c)
    writer.write(stream_request(c, "&ttl=1000"))
    head = await read_head(reader)
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    body = await asyncio.wait_for(read_chunked(reader), 60)  # before: no end for --stream-seconds (120 s)
    beats = body.count(sse.HEARTBEAT)
    print(f"stream of nothing with a {budget}-byte budget: {beats} heartbeats, then its terminal chunk")
    assert beats == 4, body
    writer.close()


def test_d2_max_poll_ttl_0_is_refused_at_start_up() -> None:
    out = subprocess.run([sys.executable, "-m", "polysocket_cli", "relay", "--max-poll-ttl", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--max-poll-ttl 0: must be at least 1" in out.stderr, out
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


# D3: memory given back on an idle relay after receiver abuse

# Control characters: 6 bytes each once JSON-encoded (\u0001), ~6 MB per copy; more than the kernel
# takes into a connection's send buffer, so each stalled stream holds most of one in the relay.
ABUSE_CHARS = 1_000_000
RETURN_SLACK = 48 * MiB  # RSS once idle, above the RSS before the abuse (as test_relay_memory.py)


async def test_d3_an_idle_relay_gives_back_the_memory_of_stalled_streams(own_stack: Stack, http: httpx.AsyncClient,
                                                                         profile: Profile) -> None:
    r = await start(own_stack)
    pid = r.relay.popen.pid
    warm = await r.connect(http)  # first-use allocations out of the way
    await warm.close()
    await asyncio.sleep(1.5)
    start_rss = rss_bytes(pid)
    # One stalled stream per socket: a newer stream or poll of the same socket cuts the one before it
    # (issue 21 D1), so the abuse that holds memory is spread over sockets.
    conns = [await r.connect(http) for _ in range(profile.memory_sockets * 2)]
    stalled = []
    for c in conns:
        assert (await c.post(b"\x01" * ABUSE_CHARS)).json()["ok"]  # the echo sends it back: ~6 MB encoded
        reader, writer = await open_raw(c, rcvbuf=4096)  # reads none of it
        writer.write(stream_request(c))
        stalled.append((reader, writer))
    await asyncio.sleep(1.0)
    peak = rss_bytes(pid)
    for _, writer in stalled:
        reset(writer)
    for c in conns:
        got = await c.receive(1)  # the message is still there, whole, for a reader (nothing was lost)
        assert got[0]["data"] == "\x01" * ABUSE_CHARS
        await c.close()
        await c.receive(1)
        await c.poll(ttl=0)  # acks the close: the socket is freed
    began = time.monotonic()

    async def back() -> bool:
        return rss_bytes(pid) - start_rss <= RETURN_SLACK

    try:
        await wait_until(back, 60, "RSS back near the start on the idle relay", step=0.5)
    finally:
        print(f"relay RSS start {start_rss / MiB:.0f} MiB, {len(stalled)} stalled streams: peak "
              f"{peak / MiB:.0f} MiB, idle {rss_bytes(pid) / MiB:.0f} MiB after {time.monotonic() - began:.0f} s")
    assert peak - start_rss > RETURN_SLACK  # the abuse did take memory (else this proves nothing)


def test_d3_the_trimmer_also_trims_on_a_timer_while_rss_stands_above_the_start() -> None:
    """What nobody counts (connections' write buffers, freed by the event loop) is given back by the
    timer: in process, with the clock and the RSS passed in (the real relay is the test above)."""
    calls: list[float] = []
    rss = [40 * MiB]
    now = [0.0]

    def trim(pad: int) -> int:
        calls.append(now[0])
        return 1

    t = memory.Trimmer(after_bytes=32 * MiB, trim=trim, every_s=10.0, rss=lambda: rss[0])
    assert not t.maybe_trim(now[0])  # the first sweep reads the start
    rss[0] = 200 * MiB  # abuse; the releases went uncounted (t.released stays 0)
    for now[0] in (1.0, 5.0, 9.9):
        assert not t.maybe_trim(now[0])  # not before the interval
    now[0] = 10.0
    assert t.maybe_trim(now[0]) and calls == [10.0]  # before: never, until 32 MB of counted releases
    rss[0] = 60 * MiB  # given back, within the margin
    for now[0] in (20.0, 30.0, 40.0):
        assert not t.maybe_trim(now[0])
    rss[0] = 100 * MiB  # still in use: one trim per interval at most
    assert [t.maybe_trim(x) for x in (50.0, 51.0, 59.9, 60.0)] == [True, False, False, True]
    t.released = 32 * MiB  # counted releases still trim at once
    assert t.maybe_trim(60.5) and t.trims == 4


# D5: 100 Continue in turn; D6: acks above the last seq queued


async def test_d5_100_continue_is_not_written_inside_an_open_stream(relay: Relay, http: httpx.AsyncClient) -> None:
    c = await relay.connect(http)
    reader, writer = await open_raw(c)
    writer.write(stream_request(c))
    assert b" 200 " in await read_head(reader)
    # Pipelined behind the open stream: headers only, waiting for 100 Continue.
    writer.write(f"POST /send?socket={c.socket}&seq={c.seq}&t=t HTTP/1.1\r\nhost: {c.fqdn}\r\ncontent-length: 5\r\n"
                 f"content-type: text/plain\r\nexpect: 100-continue\r\n\r\n".encode())
    await asyncio.sleep(0.5)
    assert (await c.poll(ttl=0))["ok"]  # a poll replaces the stream: it ends with its terminal chunk
    body = await asyncio.wait_for(read_chunked(reader), 30)  # before: "malformed chunk" (100 inside it)
    assert b"100 Continue" not in body
    assert (await read_head(reader)).startswith(b"HTTP/1.1 100 Continue\r\n")
    writer.write(b"hello")
    head = await read_head(reader)
    assert head.startswith(b"HTTP/1.1 200 "), head
    writer.close()
    assert [m["data"] for m in await c.receive(1)] == ["hello"]  # the echo of that send


async def test_d6_an_ack_above_the_last_seq_queued_is_refused_and_loses_nothing(relay: Relay,
                                                                               http: httpx.AsyncClient) -> None:
    c = await relay.connect(http)
    assert (await c.send_text("kept"))["ok"]
    opened = (await c.receive(1))[-1]["seq"]  # the echo of it: the last (and only) seq queued
    c.ack = -1  # not acked: the relay still holds it
    for answer in (await c.poll(ttl=0, ack=opened + 1),
                   await c.call("/send", {"seq": c.seq, "t": "t", "d": "x", "ack": 10**6}),
                   (await c.get("/stream", {"ack": opened + 5})).json()):
        assert answer["ok"] is False and answer["error"] == "bad_request" and "ack" in answer["message"], answer
    again = await c.poll(ttl=0)  # before: the bogus ack had freed the message, never delivered again
    assert [m["seq"] for m in again["messages"]] == [opened]
    # Last-Event-ID is what EventSource sends, not the client's choice: above the last seq, ignored.
    reader, writer = await open_raw(c)
    writer.write(stream_request(c, "", f"last-event-id: {opened + 7}\r\n"))
    assert b" 200 " in await read_head(reader)
    await c.poll(ttl=0)  # ends the stream
    assert [e["seq"] for e in events(await asyncio.wait_for(read_chunked(reader), 30))] == [opened]
    writer.close()
