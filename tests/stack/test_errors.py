"""Every malformed input gets its typed error, JSONP or JSON, and the services keep serving."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import orjson
import pytest

from tests.support.stack import RunningStack
from tests.support.wire_client import Conn, connect_raw, decode_jsonp

pytestmark = pytest.mark.stack

SID = "A" * 32


@pytest.mark.parametrize(("params", "error", "status"), [
    ({}, "bad_request", 400),
    ({"from": "t"}, "bad_request", 400),
    ({"target": "ws://127.0.0.1:1/"}, "bad_request", 400),
    ({"from": "t", "target": "http://127.0.0.1/"}, "bad_request", 400),
    ({"from": "t", "target": "ws://user:pw@127.0.0.1/"}, "bad_request", 400),
    ({"from": "t", "target": "ws://127.0.0.1:70000/"}, "bad_request", 400),
    ({"from": "t", "target": "ws://127.0.0.1/", "protocols": "a b"}, "bad_request", 400),
    ({"from": "t", "target": "ws://127.0.0.1/", "cb": "alert(1)"}, "bad_callback", 400),
])
async def test_connect_bad_parameters(stack: RunningStack, http: httpx.AsyncClient, params: dict[str, str],
                                      error: str, status: int) -> None:
    answer = await connect_raw(http, stack.router_url, params)
    assert (answer["status"], answer["error"]) == (status, error), answer
    assert answer["message"]


async def test_connect_errors_over_jsonp_are_200(stack: RunningStack, http: httpx.AsyncClient) -> None:
    resp = await http.get(f"{stack.router_url}/connect", params={"cb": "cb1", "from": "t", "target": "nope"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/javascript; charset=utf-8"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert decode_jsonp(resp.content, "cb1")["error"] == "bad_request"


async def test_bad_callback_is_never_executed_as_script(stack: RunningStack, http: httpx.AsyncClient) -> None:
    resp = await http.get(f"{stack.router_url}/connect",
                          params={"cb": "alert(document.cookie)//", "from": "t", "target": "ws://a/"})
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/json"
    assert b"alert" not in resp.content


@pytest.fixture
async def conn(stack: RunningStack, http: httpx.AsyncClient) -> Conn:
    return await stack.connect(http, stack.targets["websockets"])


@pytest.mark.parametrize(("path", "params", "error", "status"), [
    ("/send", {"seq": "0"}, "bad_request", 400),
    ("/send", {"seq": "x", "d": "a"}, "bad_request", 400),
    ("/send", {"seq": "0", "d": "a", "t": "q"}, "bad_request", 400),
    ("/send", {"seq": "0", "d": "%%%", "t": "b"}, "bad_request", 400),
    ("/send", {"seq": "0", "d": "a", "fin": "yes"}, "bad_request", 400),
    ("/send", {"seq": "5000", "d": "a"}, "sequence_gap", 409),
    ("/poll", {"ttl": "-5"}, "bad_request", 400),
    ("/poll", {"ack": "abc"}, "bad_request", 400),
    ("/close", {"code": "1005"}, "bad_request", 400),
    ("/close", {"reason": "r" * 124}, "bad_request", 400),
])
async def test_relay_bad_parameters(conn: Conn, path: str, params: dict[str, str], error: str,
                                    status: int) -> None:
    resp = await conn.get(path, params)
    assert resp.status_code == status
    assert resp.json()["error"] == error
    assert resp.headers["access-control-allow-origin"] == "*"
    jsonp = await conn.call(path, params, cb="PolySocket.cb")
    assert jsonp["ok"] is False and jsonp["error"] == error
    # still serving
    assert (await conn.send_text("alive"))["ok"]
    await conn.close()


@pytest.mark.parametrize("socket_id", [SID, "short", "x" * 100, "../etc/passwd/AAAAAAAAAAAAAAAAAAAA"])
async def test_unknown_socket_is_401(conn: Conn, socket_id: str) -> None:
    other = Conn(conn.http, conn.fqdn, socket_id, "")
    for path, params in (("/send", {"seq": 0, "d": "x"}), ("/poll", {"ttl": 0}), ("/close", {})):
        resp = await other.get(path, params)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.json()["error"] == "unknown_socket"


async def test_relay_unknown_path_method_and_options(conn: Conn) -> None:
    resp = await conn.http.get(f"{conn.base}/nope", headers={"host": conn.fqdn})
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"
    resp = await conn.http.post(f"{conn.base}/poll?socket={conn.socket}", headers={"host": conn.fqdn})
    assert resp.status_code == 405 and resp.json()["error"] == "method_not_allowed"
    resp = await conn.http.options(f"{conn.base}/send", headers={"host": conn.fqdn})
    assert resp.status_code == 204 and resp.headers["access-control-allow-origin"] == "*"


async def test_relay_rejects_invalid_utf8_and_raw_non_ascii(conn: Conn) -> None:
    url = f"{conn.base}/send?socket={conn.socket}&seq=0&d=%FF"
    resp = await conn.http.get(url, headers={"host": conn.fqdn})
    assert resp.status_code == 400 and "UTF-8" in resp.json()["message"]


async def test_oversized_post_body_is_413(conn: Conn) -> None:
    resp = await conn.post(b"x" * (6 * 1024 * 1024))
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"


async def test_message_over_limit_is_413_and_closes_1009(conn: Conn) -> None:
    chunk = b"x" * 1_000_000
    for _ in range(4):
        assert (await conn.post(chunk, fin=False)).json()["ok"]
    resp = await conn.post(chunk, fin=False)
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"
    got = await conn.receive(1)
    assert got[0]["type"] == "close" and got[0]["code"] == 1009


async def test_jsonp_poll_answer_is_script(conn: Conn) -> None:
    await conn.send_text("a\u2028b")
    resp = await conn.get("/poll", {"ttl": 1000}, cb="PolySocket._r.c7")
    assert resp.status_code == 200
    assert resp.content.startswith(b"/**/PolySocket._r.c7(")
    assert b"\\u2028" in resp.content and "\u2028".encode() not in resp.content
    await conn.close()


async def test_healthz_and_metrics(stack: RunningStack, http: httpx.AsyncClient) -> None:
    relay = stack.relays["node1"]
    health = (await http.get(f"http://127.0.0.1:{relay.port}/healthz")).json()
    assert health["ok"] and health["node"] == "node1" and health["draining"] is False
    metrics = (await http.get(f"http://127.0.0.1:{relay.port}/metrics")).text
    for name in ("polysocket_open_sockets", "polysocket_frames_to_target_total",
                 "polysocket_bytes_to_client_total", "polysocket_poll_wait_seconds_bucket",
                 "polysocket_errors_total"):
        assert name in metrics
    assert (await http.get(f"{stack.router_url}/healthz")).json()["ok"]


async def test_broken_chunk_sequence_fails_the_socket(conn: Conn) -> None:
    """A continuation that changes the frame type cannot be skipped: the socket fails with 1002."""
    assert (await conn.send_text("part", seq=1, fin=False))["ok"]  # held until seq 0 arrives
    assert (await conn.send_binary(b"z", seq=2))["ok"]
    answer = await conn.send_text("first", seq=0)
    assert answer["ok"] is False and answer["error"] == "bad_request"
    got = await conn.receive(1)
    assert got[0]["type"] == "close" and got[0]["code"] == 1002
    assert "changes the frame type" in got[0]["reason"]


async def refusal_of(port: int, request: bytes, more: bytes = b"") -> tuple[int, dict[str, str], dict[str, object]]:
    """Send ``request``, then ``more`` every 10 ms (at most 64 times) until the server answers; read to
    the server's close: status, headers and JSON body of its one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def read_all() -> bytes:
        got = b""
        with contextlib.suppress(ConnectionError):  # a close with our bytes unread is a reset after the answer
            while chunk := await reader.read(65536):
                got += chunk
        return got

    answer = asyncio.create_task(read_all())
    try:
        writer.write(request)
        for _ in range(64 if more else 0):
            await asyncio.sleep(0.01)
            if answer.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(more)
                await writer.drain()
        raw = await asyncio.wait_for(answer, 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    return int(status_line.split(" ")[1]), headers, orjson.loads(body)


@pytest.mark.parametrize("arrival", ["whole", "still-arriving"])
async def test_oversized_head_gets_the_same_answer_from_router_and_relay(stack: RunningStack, arrival: str) -> None:
    """Over 64 KiB of headers: 431 payload_too_large, plain JSON with CORS, connection closed, from
    `polysocket router` (uvicorn behind its head guard) and a relay alike; the head sent whole in one
    write, or a header that never ends, 8 KiB at a time."""
    start = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: "
    request, more = (start + b"h" * 70_000 + b"\r\n\r\n", b"") if arrival == "whole" else (start, b"h" * 8192)
    ports = {"router": int(stack.router_url.rsplit(":", 1)[1]), "relay": stack.relays["node1"].port}
    for name, port in ports.items():
        status, headers, body = await refusal_of(port, request, more)
        assert (status, body["ok"], body["error"]) == (431, False, "payload_too_large"), (name, body)
        assert headers["connection"] == "close", name
        assert headers["content-type"] == "application/json", name
        assert headers["access-control-allow-origin"] == "*", name
