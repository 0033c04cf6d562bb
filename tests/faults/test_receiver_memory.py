"""Issue 21: the receive side is bounded per socket, not per connection, whatever the client does.

One socket holds one 4,000,000-character text message of control characters (each one 6 bytes in
JSON: 24 MB encoded, the worst a text message inflates). Clients that never read (a 4 KiB
``SO_RCVBUF``, nothing received) open ``/stream`` and ``/poll`` requests for it, each on a new
connection, streams and polls in turn: every answer carries the whole message, and all but
about 2.5 MB of it stays queued in the relay's transport. Before the fix each such connection kept
its 24 MB for about 130 s (a keep-alive interval, then another until the stuck close is
aborted): 100 streams took a relay from 40 to 1,322 MiB. Now each newer request cuts the
connection before it (``relay_node.sockets.receivers.supersede``), so the relay holds the socket's
buffer and one unread answer, whatever the number of connections. A reading client then gets the
message whole: nothing was lost.

The bound is in bytes and computed from the message; RSS comes from ``/proc`` (glibc's mmap
threshold is fixed at 1 MiB, so a freed answer goes back to the system at once). No time is
asserted.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from polysocket_cli.processes import Proc, Stack, free_port
from relay_node.sockets.receivers import SLACK_BYTES
from tests.support.wire_client import Conn, connect

from .conftest import MiB, Profile, rss_bytes, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.faults]

CHARS = 4_000_000  # under the relay's default --max-message (4 MiB)
ENCODED = 6 * CHARS  # each control character is \\u00XX in JSON
STREAM_BYTES = 128 * 1024  # the relay's default --stream-bytes: a stream carries at least one message
# What the relay may hold above its RSS with the message buffered and read once (the start):
# - the newest receiver's answer, unread: the message encoded once more, plus what a stream's
#   budget lets it add (nothing here: one message crosses it);
# - the answer being built while the previous one is cut: its events, the chunk framing them and the
#   write with the headers are transient copies of the message, up to two alive at once beside
#   the one the transport keeps;
# - the superseded connections: none holds more than SLACK_BYTES (they are cut above it);
# - allocator slack.
# Each unread answer before the fix held ENCODED more: 20 stalled connections hold 480 MB there.
BOUND = 3 * (ENCODED + STREAM_BYTES) + 16 * MiB


class OneBigMessage:
    """A target that sends one text message of control characters to each connection, then waits."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/"

    async def handler(self, conn: ServerConnection) -> None:
        await conn.send("\x01" * CHARS)
        await conn.wait_closed()


@pytest.fixture
async def target() -> AsyncIterator[OneBigMessage]:
    t = OneBigMessage()
    async with serve(t.handler, "127.0.0.1", t.port, max_size=None, compression=None):
        yield t


@contextmanager
def stalled_clients() -> Iterator[list[socket.socket]]:
    """Connections that never read; closed (by the test) when it ends."""
    socks: list[socket.socket] = []
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def stall(c: Conn, path: str) -> socket.socket:
    """A client that asks for the socket's messages on a new connection and never reads them."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    s.connect(("127.0.0.1", int(c.fqdn.rsplit(":", 1)[1])))
    s.sendall(f"GET {path}?socket={c.socket}&ack=-1 HTTP/1.1\r\nhost: {c.fqdn}\r\n\r\n".encode())
    s.setblocking(False)
    return s


def answered(s: socket.socket) -> bool:
    """The relay began writing the answer (its first bytes reached the client's kernel)."""
    try:
        return bool(s.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


async def answers_cut(http: httpx.AsyncClient, relay: Proc) -> int:
    text = (await http.get(f"http://127.0.0.1:{relay.port}/metrics")).text
    found = re.search(r"^polysocket_answers_cut_total (\S+)", text, re.M)
    assert found is not None, "no polysocket_answers_cut_total in /metrics"
    return int(float(found.group(1)))


def the_message(answer: dict[str, object]) -> bool:
    messages = answer["messages"]
    assert isinstance(messages, list)
    return any(m.get("seq") == 0 and m.get("data") == "\x01" * CHARS for m in messages)


async def test_stalled_streams_and_polls_on_one_socket_hold_one_answer(
        own_stack: Stack, http: httpx.AsyncClient, target: OneBigMessage, profile: Profile) -> None:
    relay = own_stack.start_relay("rx")
    router = f"http://127.0.0.1:{own_stack.start_router().port}"
    c = await connect(http, router, target.url, token=own_stack.create_token())
    # A reading client first: the message is buffered (and the answer paths warmed up).
    assert the_message(orjson.loads((await c.get("/poll", {"ack": -1, "ttl": 5000})).content))
    await asyncio.sleep(1.0)
    pid = relay.popen.pid
    start = rss_bytes(pid)
    n = 2 * profile.memory_sockets  # streams and polls in turn
    samples: list[int] = []
    with stalled_clients() as clients:
        for k in range(n):
            s = stall(c, "/stream" if k % 2 == 0 else "/poll")
            clients.append(s)

            async def written(s: socket.socket = s) -> bool:
                return answered(s)

            async def cut(k: int = k) -> bool:  # the connection before this one held its answer unread
                return await answers_cut(http, relay) >= k

            await wait_until(written, 30, f"answer {k} not written")
            await wait_until(cut, 30, f"answer {k - 1} not cut")
            samples.append(rss_bytes(pid))
        report = (f"relay RSS start {start / MiB:.0f} MiB; {n} stalled streams and polls of a {ENCODED / 1e6:.0f} MB "
                  f"answer: peak +{(max(samples) - start) / MiB:.0f} MiB (bound +{BOUND / MiB:.0f} MiB), "
                  f"samples {[round((x - start) / MiB) for x in samples]} MiB")
        print(report)
        assert max(samples) - start <= BOUND, report
        assert await answers_cut(http, relay) == n - 1, report
        # A reading client gets the message whole: a cut answer loses nothing (writing acks nothing).
        answer = orjson.loads((await c.get("/poll", {"ack": -1, "ttl": 5000})).content)
        assert the_message(answer), report
        assert await answers_cut(http, relay) == n, report  # the last stalled one went too
    assert SLACK_BYTES < ENCODED // 100  # the slack is no second budget

