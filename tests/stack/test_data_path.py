"""The data path end to end through the public HTTP API, against two WebSocket implementations."""

from __future__ import annotations

import asyncio
import base64
import os

import httpx
import pytest

from tests.support.stack import RunningStack

pytestmark = pytest.mark.stack


async def test_echo_text_binary_unicode_empty(stack: RunningStack, http: httpx.AsyncClient, target: str) -> None:
    c = await stack.connect(http, target)
    assert (await c.send_text("hello"))["ok"]
    assert (await c.send_binary(b"\x00\x01\xff"))["ok"]
    assert (await c.send_text("héllo wörld 😀 \u2028 ✓"))["ok"]
    assert (await c.send_text(""))["ok"]
    assert (await c.send_binary(b""))["ok"]
    got = await c.receive(5)
    assert [(m["type"], m["data"]) for m in got] == [
        ("text", "hello"),
        ("binary", base64.b64encode(b"\x00\x01\xff").decode()),
        ("text", "héllo wörld 😀 \u2028 ✓"),
        ("text", ""),
        ("binary", ""),
    ]
    await c.close()


async def test_one_mib_frame_in_chunks_both_ways(stack: RunningStack, http: httpx.AsyncClient,
                                                 target: str) -> None:
    c = await stack.connect(http, target)
    payload = os.urandom(1024 * 1024)
    encoded = base64.b64encode(payload).decode()
    chunk = 1500  # what fits in a browser-safe URL
    pieces = [payload[i:i + chunk] for i in range(0, len(payload), chunk)]
    for i, piece in enumerate(pieces):
        assert (await c.send_binary(piece, fin=i == len(pieces) - 1))["ok"]
    got = await c.receive(1, ttl=10000)
    assert got[0]["type"] == "binary" and got[0]["data"] == encoded
    await c.close()


async def test_post_send_text_base64_and_raw(stack: RunningStack, http: httpx.AsyncClient, target: str) -> None:
    c = await stack.connect(http, target)
    big = "x" * (1024 * 1024)
    assert (await c.post(big.encode())).json() == {"ok": True}
    assert (await c.post(base64.b64encode(b"\x01\x02"), kind="b")).json() == {"ok": True}
    assert (await c.post(b"\xfe\xff", kind="b", content_type="application/octet-stream")).json() == {"ok": True}
    got = await c.receive(3, ttl=10000)
    assert got[0]["data"] == big
    assert base64.b64decode(got[1]["data"]) == b"\x01\x02"
    assert base64.b64decode(got[2]["data"]) == b"\xfe\xff"
    await c.close()


async def test_thousand_pipelined_sends_arrive_in_order(stack: RunningStack, http: httpx.AsyncClient,
                                                        target: str) -> None:
    c = await stack.connect(http, target)
    n = 1000
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with sem:
            r = await c.send_text(str(i), seq=i)
            assert r["ok"], r

    # Sends are issued concurrently, so they reach the relay out of order.
    await asyncio.gather(*(one(i) for i in range(n)))
    got = await c.receive(n, ttl=5000, max_polls=2000)
    assert [m["data"] for m in got] == [str(i) for i in range(n)]
    await c.close()


async def test_lost_poll_answer_is_delivered_again(stack: RunningStack, http: httpx.AsyncClient,
                                                   target: str) -> None:
    c = await stack.connect(http, target)
    await c.send_text("one")
    await c.send_text("two")
    first = await c.poll()  # pretend this answer never reached the browser: no ack advance
    while len(first["messages"]) < 2:  # the echo of "two" may not have come back yet
        first = await c.poll(ack=-1)
    assert [m["data"] for m in first["messages"]] == ["one", "two"]
    again = await c.poll(ack=-1)
    assert again["messages"] == first["messages"]
    after_ack = await c.poll(ttl=200, ack=1)
    assert after_ack["messages"] == [{"type": "heartbeat"}]
    await c.close()


async def test_retried_send_is_not_duplicated(stack: RunningStack, http: httpx.AsyncClient, target: str) -> None:
    c = await stack.connect(http, target)
    assert (await c.send_text("once", seq=0))["ok"]
    assert (await c.send_text("once", seq=0))["ok"]  # the retry: acknowledged
    assert (await c.send_text("next", seq=1))["ok"]
    got = await c.receive(2)
    assert [m["data"] for m in got] == ["once", "next"]
    quiet = await c.poll(ttl=300)
    assert quiet["messages"] == [{"type": "heartbeat"}]
    await c.close()


async def test_target_close_code_and_reason_reach_client(stack: RunningStack, http: httpx.AsyncClient,
                                                         target: str) -> None:
    c = await stack.connect(http, target)
    await c.send_text("close:4321:server says bye")
    got = await c.receive(1)
    assert got[0] == {"seq": 0, "type": "close", "code": 4321, "reason": "server says bye"}
    # Acking the close frees the socket.
    await c.poll(ttl=0)
    gone = await c.poll(ttl=0)
    assert gone["error"] == "unknown_socket"


async def test_client_close_reaches_target_and_is_reported(stack: RunningStack, http: httpx.AsyncClient,
                                                           target: str) -> None:
    c = await stack.connect(http, target)
    assert (await c.close(4000, "client done"))["ok"]
    got = await c.receive(1)
    # The echo servers answer the closing handshake with the same code and reason.
    assert got[0]["type"] == "close" and got[0]["code"] == 4000 and got[0]["reason"] == "client done"
    after = await c.send_text("late")
    assert after["error"] in ("socket_closed", "unknown_socket")


async def test_abnormal_upstream_end_is_1006(stack: RunningStack, http: httpx.AsyncClient, target: str) -> None:
    c = await stack.connect(http, target)
    await c.send_text("abort")
    got = await c.receive(1)
    assert got[0]["type"] == "close" and got[0]["code"] == 1006


async def test_subprotocol_is_negotiated(stack: RunningStack, http: httpx.AsyncClient, target: str) -> None:
    c = await stack.connect(http, target, protocols="chat.v2,chat.v1")
    assert c.protocol == "chat.v2"
    await c.close()


async def test_slow_poller_with_fast_target_loses_nothing(stack: RunningStack, http: httpx.AsyncClient,
                                                          target: str) -> None:
    c = await stack.connect(http, target)
    n = 20_000  # ~ 400 KB of JSON: the relay must buffer and apply back-pressure, not drop
    await c.send_text(f"flood:{n}")
    await asyncio.sleep(1.0)  # the target talks; nobody polls
    seen: list[str] = []
    while len(seen) < n:
        answer = await c.poll()
        for m in answer["messages"]:
            if "seq" in m and m["seq"] > c.ack:
                assert m["seq"] == c.ack + 1
                c.ack = m["seq"]
                seen.append(m["data"])
        await asyncio.sleep(0.01)  # slow
    assert seen == [str(i) for i in range(n)]
    await c.close()


async def test_target_refusing_is_upstream_failed(stack: RunningStack, http: httpx.AsyncClient) -> None:
    from polysocket_cli.processes import free_port
    from tests.support.wire_client import connect_raw

    answer = await connect_raw(http, stack.router_url,
                               {"from": "t", "token": stack.token, "target": f"ws://127.0.0.1:{free_port()}/"})
    assert answer["status"] == 502 and answer["error"] == "upstream_failed"
    assert "refused" in answer["message"].lower()
    # A plain HTTP server that does not upgrade: the router itself.
    http_only = stack.router_url.replace("http://", "ws://") + "/healthz"
    answer = await connect_raw(http, stack.router_url, {"from": "t", "token": stack.token, "target": http_only},
                               cb="cb")
    assert answer["ok"] is False and answer["error"] == "upstream_failed"
    assert "HTTP 405" in answer["message"] or "HTTP" in answer["message"]
