"""Batched sends (several frames in one /send), a /close without a code, and the relay's idle
timeout in the connect answer, end to end through the public HTTP API (docs/protocol.md)."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import httpx
import pytest

from polysocket_core import wire
from polysocket_core.errors import ErrorCode, PolysocketError
from tests.support.stack import RunningStack
from tests.support.wire_client import Conn, decode_jsonp

pytestmark = pytest.mark.stack

SID = "A" * 32


def batch(frames: list[list[object]]) -> str:
    return json.dumps(frames, ensure_ascii=False)


async def post_batch(c: Conn, body: str) -> httpx.Response:
    return await c.http.post(f"{c.base}/send?socket={c.socket}&batch=1", content=body.encode(),
                             headers={"host": c.fqdn, "content-type": "text/plain;charset=UTF-8"})


def test_parse_send_batch() -> None:
    frames = wire.parse_send_batch({"socket": SID}, b'[[0,"t",1,"h\\u00e9"],[1,"b",0,"AAE="],[2,"b",1,""]]')
    assert [(f.seq, f.kind, f.fin, f.data) for f in frames] == [
        (0, "t", True, "hé".encode()), (1, "b", False, b"\x00\x01"), (2, "b", True, b"")]
    assert wire.parse_send_batch({"socket": SID, "batch": '[[7,"t",1,"x"]]'})[0].seq == 7
    for bad in ["", "{}", "[]", "[[0,\"t\",1]]", "[[-1,\"t\",1,\"x\"]]", "[[0.5,\"t\",1,\"x\"]]",
                "[[true,\"t\",1,\"x\"]]", "[[0,\"x\",1,\"x\"]]", "[[0,\"t\",2,\"x\"]]", "[[0,\"t\",1,5]]",
                "[[0,\"b\",1,\"!!\"]]", "[[0,\"t\",1,\"\\ud800\"]]", "not json",
                json.dumps([[i, "t", 1, ""] for i in range(wire.MAX_BATCH_FRAMES + 1)])]:
        with pytest.raises(PolysocketError) as err:
            wire.parse_send_batch({"socket": SID, "batch": bad})
        assert err.value.code is ErrorCode.BAD_REQUEST, bad


async def test_post_batch_in_order_and_retry_not_duplicated(stack: RunningStack, http: httpx.AsyncClient,
                                                            target: str) -> None:
    c = await stack.connect(http, target)
    first = batch([[i, "t", 1, f"m{i}"] for i in range(0, 100)])
    second = batch([[i, "t", 1, f"m{i}"] for i in range(100, 200)] + [[200, "b", 0, "AAE="], [201, "b", 1, "Ag=="]])
    # the second batch arrives first: held, then released in order when the first comes
    assert (await post_batch(c, second)).json() == {"ok": True}
    assert (await post_batch(c, first)).json() == {"ok": True}
    # a retried batch (its answer lost) is acknowledged and not sent again
    assert (await post_batch(c, first)).json() == {"ok": True}
    got = await c.receive(201, max_polls=500)
    assert [m["data"] for m in got[:200]] == [f"m{i}" for i in range(200)]
    assert base64.b64decode(got[200]["data"]) == b"\x00\x01\x02"
    c.seq = 202
    assert (await c.send_text("after"))["ok"]
    assert [m["data"] for m in await c.receive(1)] == ["after"]
    await c.close()


async def test_jsonp_get_batch(stack: RunningStack, http: httpx.AsyncClient, target: str) -> None:
    c = await stack.connect(http, target)
    frames = batch([[0, "t", 1, "a & b = ✓"], [1, "t", 0, "one "], [2, "t", 1, "message"]])
    resp = await http.get(f"{c.base}/send?cb=cb.x&socket={c.socket}&batch={quote(frames, safe='')}",
                          headers={"host": c.fqdn})
    assert decode_jsonp(resp.content, "cb.x") == {"ok": True}
    assert [m["data"] for m in await c.receive(2)] == ["a & b = ✓", "one message"]
    bad = await http.get(f"{c.base}/send?socket={c.socket}&batch=%5B%5D", headers={"host": c.fqdn})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    await c.close()


async def test_close_without_a_code_reaches_the_target_without_a_status(
        stack: RunningStack, http: httpx.AsyncClient, target: str) -> None:
    c = await stack.connect(http, target)
    assert (await c.call("/close", {}))["ok"]
    got = await c.receive(1)
    # the echo targets answer a close frame without a status with one without a status: 1005
    assert got == [{"seq": 0, "type": "close", "code": 1005, "reason": ""}]


async def test_connect_answer_carries_the_idle_timeout(stack: RunningStack, http: httpx.AsyncClient) -> None:
    resp = await http.get(f"{stack.router_url}/connect", params={
        "from": "pytest", "target": stack.targets["websockets"], "token": stack.token})
    answer = resp.json()
    assert answer["ok"] and answer["idle"] == 60_000  # the relays' default --idle-timeout, in ms
    c = Conn(http, answer["fqdn"], answer["socket"], answer["protocol"])
    await c.close()
