"""The relay's own HTTP/1.1 layer (relay_node.edge.http1.RelayHTTPProtocol) spoken to over raw sockets:
pipelining, chunked bodies, 100-continue, HTTP/1.0, and refusal of malformed or oversized requests."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from tests.support.stack import RunningStack

pytestmark = pytest.mark.stack


def exchange(port: int, raw: bytes, timeout: float = 10, half_close: bool = True) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def relay_port(stack: RunningStack) -> int:
    return stack.relays["node1"].port


def test_pipelined_requests_are_answered_in_order(relay_port: int) -> None:
    req = b"GET /healthz HTTP/1.1\r\nHost: a.node1.localhost\r\n\r\n"
    bad = b"GET /nope HTTP/1.1\r\nHost: a.node1.localhost\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: a.node1.localhost\r\nConnection: close\r\n\r\n"
    out = exchange(relay_port, req * 20 + bad + last)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)  # answers follow each other's bodies directly
    assert statuses == [b"200"] * 20 + [b"404", b"200"]


def test_http10_closes_after_answer(relay_port: int) -> None:
    out = exchange(relay_port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b'"ok":true' in out


@pytest.mark.parametrize(("raw", "status"), [
    (b"THIS IS NOT HTTP\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"400"),
    (b"GET /" + b"a" * (129 * 1024), b"414"),  # the server answers before the request line ends
    (b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70_000 + b"\r\n\r\n", b"431"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", b"400"),
])
def test_malformed_requests_are_refused(relay_port: int, raw: bytes, status: bytes) -> None:
    out = exchange(relay_port, raw, half_close=False)
    assert out.split(b" ")[1] == status, out[:200]


async def test_chunked_post_and_expect_continue(stack: RunningStack, http: httpx.AsyncClient) -> None:
    c = await stack.connect(http, stack.targets["websockets"])
    port = stack.relays[c.fqdn.split(".")[1]].port
    body = b"hello chunked world"
    chunked = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (body[:5], body[5:])) + b"0\r\n\r\n"
    raw = (f"POST /send?socket={c.socket}&seq=0 HTTP/1.1\r\nHost: {c.fqdn}\r\n"
           "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").encode() + chunked
    out = exchange(port, raw)
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert out.endswith(b'{"ok":true}')
    got = await c.receive(1)
    assert got[0]["data"] == body.decode()
    await c.close()


def test_server_keeps_serving_after_abuse(relay_port: int) -> None:
    for _ in range(20):
        exchange(relay_port, b"\x00\xff garbage \r\n\r\n")
    assert exchange(relay_port, b"GET /healthz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_pipelining_without_reading_is_cut_off(stack: RunningStack) -> None:
    """A client that pipelines requests and never reads its answers must not grow the relay."""
    relay = stack.relays["node2"]
    before = rss_kib(relay.popen.pid)
    burst = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    sent = 0
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect(("127.0.0.1", relay.port))
        try:
            while sent < 40 * 1024 * 1024:  # bounded: 40 MB of requests at most
                s.sendall(burst)
                sent += len(burst)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    assert sent < 40 * 1024 * 1024, "the relay kept reading requests it could not answer"
    assert rss_kib(relay.popen.pid) - before < 64 * 1024, "relay memory grew with unread answers"
    assert exchange(relay.port, b"GET /healthz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")


def relay_log(stack: RunningStack, name: str) -> bytes:
    return (stack.stack.log_dir / f"relay-{name}.log").read_bytes()


@pytest.mark.parametrize("size", [60_000, 66_000, 100_000, 127 * 1024])
async def test_long_urls_up_to_the_limit_are_answered_not_500(stack: RunningStack, http: httpx.AsyncClient,
                                                             size: int) -> None:
    """D5: URLs up to the advertised 128 KiB reach the endpoint (here: a typed 4xx about the data),
    and the relay's log does not grow with the URL."""
    c = await stack.connect(http, stack.targets["websockets"])
    name = c.fqdn.split(".")[1]
    port = stack.relays[name].port
    before = len(relay_log(stack, name))
    pad = "x" * (size - 200)
    raw = (f"GET /send?socket={c.socket}&seq=0&t=b&d=%25%25{pad} HTTP/1.1\r\nHost: {c.fqdn}\r\n"
           "Connection: close\r\n\r\n").encode()
    out = exchange(port, raw)
    assert out.split(b" ")[1] == b"400", out[:300]
    assert b'"error":"bad_request"' in out
    assert len(relay_log(stack, name)) - before < 2048
    await c.close()


@pytest.mark.parametrize("target", [
    b"http://[::1/x",  # absolute-form with a broken authority
    b"http://h",  # absolute-form without a path
    b"nope",  # neither origin-form nor absolute-form
    b"/%ff%fe",  # percent-escapes that are not UTF-8
])
def test_malformed_request_targets_are_typed_4xx(stack: RunningStack, target: bytes) -> None:
    """D5: a request-target the relay cannot route is a 4xx with a JSON error, never a 500."""
    port = stack.relays["node1"].port
    before = len(relay_log(stack, "node1"))
    out = exchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status = int(out.split(b" ")[1])
    assert 400 <= status < 500, out[:300]
    assert b"Traceback" not in relay_log(stack, "node1")[before:]


async def test_refused_requests_are_not_executed(stack: RunningStack, http: httpx.AsyncClient) -> None:
    """D6: a /send refused with 431 (headers too large) must not reach the target."""
    c = await stack.connect(http, stack.targets["websockets"])
    port = stack.relays[c.fqdn.split(".")[1]].port
    raw = (f"GET /send?socket={c.socket}&seq=0&d=leaked HTTP/1.1\r\nHost: {c.fqdn}\r\n"
           f"X-Big: {'b' * 70_000}\r\nConnection: close\r\n\r\n").encode()
    out = exchange(port, raw, half_close=False)
    assert out.split(b" ")[1] == b"431", out[:200]
    assert (await c.send_text("kept"))["ok"] is True  # seq 0 is still free: the refused send never ran
    got = await c.receive(1)
    assert [m["data"] for m in got] == ["kept"]
    await c.close()
