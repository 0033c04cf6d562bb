"""polysocket.js in a real Chromium against the real stack (router, relays, echo targets).

Every behaviour runs three ways: ``websocket`` (the browser's own WebSocket, chosen by ``auto``),
``xhr`` (``window.WebSocket`` deleted before the library loads: ``auto`` picks CORS XHR) and
``jsonp`` (``window.WebSocket`` deleted, script tags forced).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from engines import BrowserContext
from psbrowser import BrowserStack, PageFactory

from tests.support.loopback import LoopbackServer
from tests.support.ports import free_port

pytestmark = [pytest.mark.browser, pytest.mark.stack]

MODES = ["websocket", "xhr", "jsonp"]
UNICODE = 'héllo wörld ✓ ≠ 日本語 \U0001d11e 🎉 \u2028\u2029 "quotes" <tag> & ; % + = ? # /'


def options_for(mode: str) -> dict[str, Any]:
    if mode == "jsonp":
        return {"transport": "jsonp"}
    return {}


def open_page(pages: PageFactory, mode: str) -> Any:
    return pages.open(native=(mode == "websocket"))


def connect(
    page: Any,
    target: str,
    mode: str,
    *,
    protocols: list[str] | None = None,
    binary_type: str = "arraybuffer",
    options: dict[str, Any] | None = None,
) -> int:
    opts = {**options_for(mode), **(options or {})}
    res = page.evaluate("([t, p, o, b]) => psOpen(t, p, o, b)", [target, protocols, opts, binary_type])
    assert res["ok"], f"did not open: {res}"
    assert res["transport"] == mode
    return int(res["id"])


def send(page: Any, sid: int, js_expr: str) -> None:
    """Evaluate ``js_expr`` in the page with ``s`` bound to the socket (statements allowed)."""
    page.evaluate(f"(id) => {{ const s = psSocks[id].s; {js_expr}; }}", sid)


def wait_messages(page: Any, sid: int, n: int, timeout_ms: int = 30_000) -> list[dict[str, str]]:
    res = page.evaluate("([id, n, t]) => psWait(id, n, t)", [sid, n, timeout_ms])
    msgs: list[dict[str, str]] = res["messages"]
    assert len(msgs) >= n, f"got {len(msgs)} of {n} messages; events {res['events']}"
    return msgs


def wait_close(page: Any, sid: int, timeout_ms: int = 30_000) -> dict[str, Any]:
    res = page.evaluate("([id, t]) => psWaitClose(id, t)", [sid, timeout_ms])
    closes = [e for e in res["events"] if e["type"] == "close"]
    assert closes, f"no close event: {res['events']}"
    assert len(closes) == 1
    assert res["readyState"] == 3
    result: dict[str, Any] = {"close": closes[0], "events": res["events"], "messages": res["messages"]}
    return result


def no_page_errors(page: Any) -> None:
    assert page.page_errors == []


def fetch_via_loopback(route: Any) -> Any:
    """route.fetch() for a relay URL: Playwright's own resolver does not map *.localhost to loopback."""
    parts = urlsplit(route.request.url)
    host = parts.hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        url = urlunsplit((parts.scheme, f"127.0.0.1:{parts.port}", parts.path, parts.query, ""))
        return route.fetch(url=url)
    return route.fetch()


# ------------------------------------------------------------------------------------------ basics


@pytest.mark.parametrize("mode", MODES)
def test_text_unicode_and_empty_echo(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    for target in browser_stack.targets.values():
        page = open_page(pages, mode)
        sid = connect(page, target, mode)
        texts = ["hello", UNICODE, "", "a" * 10, "lone \ud800 surrogate"]
        page.evaluate("([id, texts]) => texts.forEach((t) => psSocks[id].s.send(t))", [sid, texts])
        msgs = wait_messages(page, sid, len(texts))
        expected = [*texts[:-1], "lone \ufffd surrogate"]
        assert [m["t"] for m in msgs] == ["text"] * len(texts)
        assert [m["d"] for m in msgs] == expected
        info = page.evaluate(
            "(id) => { const s = psSocks[id].s; return [s.readyState, s.url, s.protocol, s.extensions,"
            " s.bufferedAmount, s.OPEN, PolySocket.CLOSED]; }",
            sid,
        )
        assert info[0] == 1
        assert info[1].startswith("ws://")
        assert info[3] == "" or mode == "websocket"
        assert info[5:] == [1, 3]
        no_page_errors(page)
        page.close()


@pytest.mark.parametrize("mode", MODES)
def test_binary_arraybuffer_view_and_blob(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    sid = connect(page, browser_stack.target, mode, binary_type="arraybuffer")
    send(
        page,
        sid,
        """
        const all = new Uint8Array(256); for (let i = 0; i < 256; i++) all[i] = i;
        s.send(all.buffer);
        s.send(new Uint8Array([9, 8, 7, 6, 5]).subarray(1, 4));
        s.send(new Blob([new Uint8Array([1, 2, 3]), "xyz"]));
        s.send(new ArrayBuffer(0));
        s.send("after binary");
    """,
    )
    msgs = wait_messages(page, sid, 5)
    assert [m["t"] for m in msgs] == ["arraybuffer"] * 4 + ["text"]
    assert base64.b64decode(msgs[0]["d"]) == bytes(range(256))
    assert base64.b64decode(msgs[1]["d"]) == bytes([8, 7, 6])
    assert base64.b64decode(msgs[2]["d"]) == b"\x01\x02\x03xyz"
    assert base64.b64decode(msgs[3]["d"]) == b""
    assert msgs[4]["d"] == "after binary"
    # binaryType "blob" (the default) delivers Blobs
    send(page, sid, "s.binaryType = 'blob'; s.send(new Uint8Array([200, 201]))")
    msgs = wait_messages(page, sid, 6)
    assert msgs[5] == {"t": "blob", "d": base64.b64encode(bytes([200, 201])).decode()}
    no_page_errors(page)


@pytest.mark.parametrize("mode", MODES)
def test_default_binary_type_is_blob(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    res = page.evaluate(
        "([t, o]) => { const s = new PolySocket(t, Object.assign({router: PS_ROUTER}, o));"
        " const r = [s.binaryType, s.readyState, s.bufferedAmount, s.protocol]; s.close(); return r; }",
        [browser_stack.target, options_for(mode)],
    )
    assert res == ["blob", 0, 0, ""]


@pytest.mark.parametrize("mode", MODES)
def test_256_kib_both_ways(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    sid = connect(page, browser_stack.target, mode)
    size = 256 * 1024
    rnd = random.Random(5)
    blob = bytes(rnd.getrandbits(8) for _ in range(size))
    # text with multi-byte characters and characters that URL-encoding expands
    text = "".join(rnd.choice("ab+/ &%é日\U0001f389") for _ in range(size // 4))
    page.evaluate(
        "([id, b64, text]) => { const s = psSocks[id].s; s.send(psBytes(b64)); s.send(text); }",
        [sid, base64.b64encode(blob).decode(), text],
    )
    msgs = wait_messages(page, sid, 2, timeout_ms=60_000)
    assert msgs[0]["t"] == "arraybuffer"
    got = base64.b64decode(msgs[0]["d"])
    assert len(got) == size
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    assert msgs[1] == {"t": "text", "d": text}
    # bufferedAmount drains back to 0 once everything is accepted
    page.wait_for_function("(id) => psSocks[id].s.bufferedAmount === 0", arg=sid)
    no_page_errors(page)


@pytest.mark.parametrize("mode", MODES)
def test_500_rapid_sends_arrive_in_order(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    sid = connect(page, browser_stack.target, mode)
    # right after the sends (same task) they are queued: batched, they may all be accepted by the
    # time another evaluate() could look
    buffered = page.evaluate(
        "(id) => { const s = psSocks[id].s; for (let i = 0; i < 500; i++) s.send('m' + i); return s.bufferedAmount; }",
        sid,
    )
    assert buffered > 0 or mode == "websocket"
    msgs = wait_messages(page, sid, 500, timeout_ms=90_000)
    assert [m["d"] for m in msgs] == [f"m{i}" for i in range(500)]


@pytest.mark.parametrize("mode", MODES)
def test_server_flood_arrives_in_order(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    sid = connect(page, browser_stack.target, mode)
    send(page, sid, "s.send('flood:1000')")
    msgs = wait_messages(page, sid, 1000, timeout_ms=60_000)
    assert [m["d"] for m in msgs] == [str(i) for i in range(1000)]


@pytest.mark.parametrize("mode", MODES)
def test_subprotocol_negotiated(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    res = page.evaluate("([t, o]) => psOpen(t, ['chat.v2', 'chat.v1'], o)", [browser_stack.target, options_for(mode)])
    assert res["ok"]
    assert res["protocol"] == "chat.v2"


# ------------------------------------------------------------------------------------------ closing


@pytest.mark.parametrize("mode", MODES)
def test_server_close_with_code_and_reason(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    for target in browser_stack.targets.values():
        page = open_page(pages, mode)
        sid = connect(page, target, mode)
        send(page, sid, "s.send('before'); s.send('close:4001:bye now ✓')")
        res = wait_close(page, sid)
        assert res["close"]["code"] == 4001
        assert res["close"]["reason"] == "bye now ✓"
        assert res["close"]["wasClean"] is True
        assert [m["d"] for m in res["messages"]] == ["before"]
        assert [e["type"] for e in res["events"]] == ["open", "close"]
        # sends after close are dropped silently, as by a native socket
        send(page, sid, "s.send('late')")
        no_page_errors(page)
        page.close()


@pytest.mark.parametrize("mode", MODES)
def test_client_close(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    sid = connect(page, browser_stack.target, mode)
    state = page.evaluate(
        "(id) => { const s = psSocks[id].s; s.send('last words'); s.close(4002, 'client bye'); return s.readyState; }",
        sid,
    )
    assert state == 2  # CLOSING
    res = wait_close(page, sid)
    assert res["close"]["code"] == 4002
    assert res["close"]["reason"] == "client bye"
    assert res["close"]["wasClean"] is True
    # a second close() is a no-op
    send(page, sid, "s.close()")


@pytest.mark.parametrize("mode", MODES)
def test_client_close_default_code(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    sid = connect(page, browser_stack.target, mode)
    send(page, sid, "s.close()")
    res = wait_close(page, sid)
    # close() without a code sends a close frame without a status: the echo of it has none either
    assert res["close"]["code"] == 1005
    assert res["close"]["wasClean"] is True


@pytest.mark.parametrize("mode", MODES)
def test_close_and_send_validation(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    res = page.evaluate(
        """([t, o]) => {
        const out = {};
        const s = new PolySocket(t, Object.assign({router: PS_ROUTER}, o));
        try { s.send('x'); out.sendConnecting = 'no error'; } catch (e) { out.sendConnecting = e.name; }
        try { s.close(1001); out.code1001 = 'no error'; } catch (e) { out.code1001 = e.name; }
        try { s.close(2999); out.code2999 = 'no error'; } catch (e) { out.code2999 = e.name; }
        try { s.close(1000, 'é'.repeat(62)); out.longReason = 'no error'; }
            catch (e) { out.longReason = e.name; }
        try { new PolySocket('ftp://x/', {router: PS_ROUTER}); out.scheme = 'no error'; }
            catch (e) { out.scheme = e.name; }
        try { new PolySocket('ws://x/#frag', {router: PS_ROUTER}); out.fragment = 'no error'; }
            catch (e) { out.fragment = e.name; }
        try { new PolySocket('ws://x/', ['a', 'a'], {router: PS_ROUTER}); out.dup = 'no error'; }
            catch (e) { out.dup = e.name; }
        const h = new PolySocket('http://localhost:81/p?q=1', {router: PS_ROUTER});
        out.httpUrl = h.url; h.close();
        s.close();
        out.afterClose = s.readyState;
        return out;
    }""",
        [browser_stack.target, options_for(mode)],
    )
    assert res == {
        "sendConnecting": "InvalidStateError",
        "code1001": "InvalidAccessError",
        "code2999": "InvalidAccessError",
        "longReason": "SyntaxError",
        "scheme": "SyntaxError",
        "fragment": "SyntaxError",
        "dup": "SyntaxError",
        "httpUrl": "ws://localhost:81/p?q=1",
        "afterClose": 2,
    }


@pytest.mark.parametrize("mode", MODES)
def test_close_while_connecting(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    res = page.evaluate(
        """([t, o]) => new Promise((resolve) => {
        const ev = [];
        const s = new PolySocket(t, Object.assign({router: PS_ROUTER}, o));
        s.onopen = () => ev.push('open');
        s.onerror = () => ev.push('error');
        s.onclose = (e) => { ev.push('close:' + e.code + ':' + e.wasClean);
                             setTimeout(() => resolve(ev), 300); };
        s.close();
    })""",
        [browser_stack.target, options_for(mode)],
    )
    assert res == ["error", "close:1006:false"]


@pytest.mark.parametrize("mode", MODES)
def test_target_refuses(pages: PageFactory, mode: str) -> None:
    page = open_page(pages, mode)
    target = f"ws://127.0.0.1:{free_port()}/"
    res = page.evaluate("([t, o]) => psOpen(t, null, o)", [target, options_for(mode)])
    assert res["ok"] is False
    types = [e["type"] for e in res["events"]]
    assert types == ["error", "close"]
    close = res["events"][1]
    assert close["code"] == 1006
    assert close["wasClean"] is False
    assert close["readyState"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_target_aborts_connection(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    sid = connect(page, browser_stack.target, mode)
    send(page, sid, "s.send('abort')")
    res = wait_close(page, sid)
    assert res["close"]["code"] == 1006
    assert res["close"]["wasClean"] is False
    # a drop after open is a close 1006 alone, as a browser reports it: no error event first
    assert [e["type"] for e in res["events"]] == ["open", "close"]


# ------------------------------------------------------------------------------------------ relay only


@pytest.mark.parametrize("mode", ["xhr", "jsonp"])
def test_several_sockets_on_their_own_subdomains(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    ids = [connect(page, browser_stack.target, mode) for _ in range(6)]
    hosts = page.evaluate("(ids) => ids.map((id) => psSocks[id].s._carrier.base)", ids)
    assert len(set(hosts)) == len(ids), hosts
    page.evaluate(
        "(ids) => { for (let k = 0; k < 20; k++) ids.forEach((id) => psSocks[id].s.send(id + ':' + k)); }",
        ids,
    )
    for sid in ids:
        msgs = wait_messages(page, sid, 20)
        assert [m["d"] for m in msgs] == [f"{sid}:{k}" for k in range(20)]
    page.evaluate("(ids) => ids.forEach((id) => psSocks[id].s.close(1000, 'done'))", ids)
    for sid in ids:
        assert wait_close(page, sid)["close"]["code"] == 1000


@pytest.mark.parametrize("mode", ["xhr", "jsonp"])
def test_dropped_poll_answers_lose_nothing(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    dropped: list[str] = []

    def handle(route: Any) -> None:
        # Let the relay answer, then lose the answer on the way: the first three that carry messages.
        response = fetch_via_loopback(route)
        body = response.text()
        if '"seq"' in body and len(dropped) < 3:
            dropped.append(body)
            route.abort("connectionreset")
            return
        route.fulfill(response=response)

    page.route("**/poll?**", handle)
    # XHR polls here (its default is a stream: test_stream.py cuts streams mid-message instead)
    sid = connect(page, browser_stack.target, mode, options={"receive": "poll"})
    send(page, sid, "s.send('flood:50')")
    msgs = wait_messages(page, sid, 50, timeout_ms=60_000)
    send(page, sid, "s.send('end')")
    msgs = wait_messages(page, sid, 51)
    assert [m["d"] for m in msgs] == [*(str(i) for i in range(50)), "end"]
    assert len(dropped) == 3
    page.unroute_all(behavior="ignoreErrors")


@pytest.mark.parametrize("mode", ["xhr", "jsonp"])
def test_failed_sends_are_retried_without_duplicates(
    pages: PageFactory, browser_stack: BrowserStack, mode: str
) -> None:
    page = open_page(pages, mode)
    lost: list[str] = []
    seen = [0]

    def handle(route: Any) -> None:
        # The relay gets every send, but every third answer is lost: the client retries the same seq.
        response = fetch_via_loopback(route)
        seen[0] += 1
        if len(lost) < 10 and seen[0] % 3 == 0:
            lost.append(route.request.url)
            route.abort("connectionreset")
            return
        route.fulfill(response=response)

    page.route("**/send?**", handle)
    sid = connect(page, browser_stack.target, mode)
    send(page, sid, "for (let i = 0; i < 40; i++) s.send('r' + i)")
    msgs = wait_messages(page, sid, 40, timeout_ms=60_000)
    page.wait_for_timeout(300)
    msgs = wait_messages(page, sid, 40)
    assert [m["d"] for m in msgs] == [f"r{i}" for i in range(40)]
    assert lost
    page.unroute_all(behavior="ignoreErrors")


@pytest.mark.parametrize("mode", ["xhr", "jsonp"])
def test_jsonp_and_xhr_keep_urls_short(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page, read = pages.open_watched(native=False)
    sid = connect(page, browser_stack.target, mode)
    send(page, sid, "s.send('€'.repeat(3000)); s.send(new Uint8Array(5000).fill(251))")
    msgs = wait_messages(page, sid, 2)
    assert msgs[0]["d"] == "€" * 3000
    assert base64.b64decode(msgs[1]["d"]) == bytes([251]) * 5000
    urls = [url for url, _ in read()]
    sends = [u for u in urls if "/send?" in u]
    assert sends
    assert max(len(u) for u in urls) <= 2000
    if mode == "jsonp":
        assert len(sends) > 2  # chunked with fin=0
        assert any("fin=0" in u for u in sends)
    else:
        assert all("d=" not in u for u in sends)  # XHR posts the data


def test_jsonp_leaves_no_script_tags_or_callbacks(pages: PageFactory, browser_stack: BrowserStack) -> None:
    page = open_page(pages, "jsonp")
    sid = connect(page, browser_stack.target, "jsonp", options={"pollTtl": 500})
    send(page, sid, "for (let i = 0; i < 20; i++) s.send('x' + i)")
    wait_messages(page, sid, 20)
    page.wait_for_timeout(1200)  # a few heartbeat polls
    scripts = page.evaluate("() => [...document.scripts].filter((s) => s.src.includes('/send?')).length")
    assert scripts == 0
    live = page.evaluate("() => Object.keys(PolySocket._cb)")
    assert len(live) <= 1  # the outstanding poll; answered requests leave nothing behind
    send(page, sid, "s.close()")
    wait_close(page, sid)


@pytest.mark.parametrize("mode", ["xhr", "jsonp"])
def test_leaving_the_page_closes_relay_sockets(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    sid = connect(page, browser_stack.target, mode)
    base, socket_id = page.evaluate("(id) => [psSocks[id].s._carrier.base, psSocks[id].s._carrier.id]", sid)
    page.goto("about:blank")
    # The relay got a /close as the page went: the next poll (made here, as the page is gone)
    # carries the final close instead of waiting for the relay's idle timeout.
    port = urlsplit(base).port
    deadline = time.monotonic() + 15
    messages: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        url = f"http://127.0.0.1:{port}/poll?socket={socket_id}&ttl=1000&ack=-1"
        with urllib.request.urlopen(url, timeout=10) as resp:
            answer = json.loads(resp.read())
        messages = answer.get("messages", [])
        if any(m.get("type") == "close" for m in messages):
            break
    # 1001 "going away", as a browser closes its own sockets when the page is left
    assert [m for m in messages if m.get("type") == "close"] == [
        {"seq": 0, "type": "close", "code": 1001, "reason": ""}
    ]


# ------------------------------------------------------------------------------------------ transport choice


def test_auto_falls_back_when_the_upgrade_is_blocked(pages: PageFactory, browser_stack: BrowserStack) -> None:
    # A WebSocket that never opens, as behind a proxy that kills the upgrade.
    blocked = """
        window.WebSocket = function (url) {
            const self = this; this.readyState = 0; this.url = url;
            window.__blockedAttempts = (window.__blockedAttempts || 0) + 1;
            setTimeout(() => {
                self.readyState = 3; self.onerror && self.onerror({type: 'error'});
                self.onclose && self.onclose({type: 'close', code: 1006, reason: '', wasClean: false});
            }, 50);
        };
        window.WebSocket.prototype.close = function () {};
        window.WebSocket.prototype.send = function () { throw new Error('not open'); };
    """
    page = pages.open(native=True, init_script=blocked)
    res = page.evaluate("(t) => psOpen(t, null, {})", browser_stack.target)
    assert res["ok"], res
    assert res["transport"] == "xhr"
    assert [e["type"] for e in res["events"]] == ["open"]  # the failed native try is invisible
    assert page.evaluate("() => window.__blockedAttempts") == 1
    send(page, res["id"], "s.send('via relay')")
    assert wait_messages(page, res["id"], 1)[0]["d"] == "via relay"


def test_auto_falls_back_when_the_upgrade_hangs(pages: PageFactory, browser_stack: BrowserStack) -> None:
    hanging = """
        window.WebSocket = function (url) { this.readyState = 0; };
        window.WebSocket.prototype.close = function () { window.__hangClosed = true; };
    """
    page = pages.open(native=True, init_script=hanging)
    res = page.evaluate("(t) => psOpen(t, null, {nativeTimeout: 300, transport: 'auto'})", browser_stack.target)
    assert res["ok"], res
    assert res["transport"] == "xhr"
    assert page.evaluate("() => window.__hangClosed") is True


def test_auto_uses_jsonp_without_websocket_and_cors_xhr(pages: PageFactory, browser_stack: BrowserStack) -> None:
    # As in IE 6-9: no WebSocket, no XMLHttpRequest with CORS.
    page = pages.open(native=False, init_script="delete window.XMLHttpRequest;")
    assert page.evaluate("() => [PolySocket.supports.websocket, PolySocket.supports.xhr]") == [False, False]
    sid = connect(page, browser_stack.target, "jsonp", options={"transport": "auto"})
    send(page, sid, "s.send('old browser')")
    assert wait_messages(page, sid, 1)[0]["d"] == "old browser"


@pytest.mark.parametrize("mode", MODES)
def test_minified_build_works(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = pages.open(native=(mode == "websocket"), library="/client/polysocket.min.js")
    sid = connect(page, browser_stack.target, mode)
    send(page, sid, "s.send('minified ✓'); s.send(new Uint8Array([1, 2])); s.send('close:4003:min')")
    res = wait_close(page, sid)
    assert [m["d"] for m in res["messages"]] == ["minified ✓", "AQI="]
    assert res["close"]["code"] == 4003
    assert res["close"]["reason"] == "min"


# What IE 6-8 lack, hidden while the library loads (its feature tests run then), restored after so
# that the test harness and Playwright keep working.
OLD_RUNTIME_HIDE = """
    window.__hidden = {};
    ["WebSocket", "XMLHttpRequest", "ArrayBuffer", "Uint8Array", "Blob", "FileReader", "DOMException",
     "EventTarget", "Event", "MessageEvent", "CloseEvent", "URL", "Reflect", "EventSource"]
        .forEach(function (k) { window.__hidden[k] = window[k]; window[k] = undefined; });
    window.__hidden.defineProperty = Object.defineProperty;
    Object.defineProperty = function () { throw new Error("IE8: only DOM objects"); };
"""
OLD_RUNTIME_RESTORE = """
    Object.defineProperty = window.__hidden.defineProperty;
    ["XMLHttpRequest", "ArrayBuffer", "Uint8Array", "Blob", "FileReader", "DOMException",
     "EventTarget", "Event", "MessageEvent", "CloseEvent", "URL", "Reflect", "EventSource"]
        .forEach(function (k) { window[k] = window.__hidden[k]; });
"""


def test_old_browser_runtime(pages: PageFactory, browser_stack: BrowserStack) -> None:
    page = pages.open(native=True, init_script=OLD_RUNTIME_HIDE, after_load=OLD_RUNTIME_RESTORE)
    supports = page.evaluate("() => PolySocket.supports")
    assert supports == {"websocket": False, "xhr": False, "jsonp": True, "eventsource": False, "arraybuffer": False,
                        "blob": False, "eventtarget": False, "events": False, "url": False}
    res = page.evaluate(
        """([t, big]) => new Promise((resolve) => {
        const out = {messages: [], buffered: []};
        const s = new PolySocket(t);
        out.binaryType = s.binaryType;
        try { s.send('x'); } catch (e) { out.sendConnecting = e.name + ':' + (e instanceof Error); }
        try { s.close(1001); } catch (e) { out.badCode = e.name; }
        s.onopen = () => {
            out.transport = s.transport;
            s.send('plain'); s.send('ünïcödé ✓ \ud83c\udf89'); s.send(''); s.send(big);
            out.buffered.push(s.bufferedAmount);
            s.send('close:4004:old');
        };
        s.onmessage = (e) => { out.messages.push(e.data); out.buffered.push(s.bufferedAmount); };
        s.onclose = (e) => { out.close = [e.code, e.reason, e.wasClean]; resolve(out); };
    })""",
        [browser_stack.target, "z" * 100_000],
    )
    assert res["transport"] == "jsonp"
    assert res["binaryType"] == "arraybuffer"
    assert res["sendConnecting"] == "InvalidStateError:true"
    assert res["badCode"] == "InvalidAccessError"
    assert res["messages"] == ["plain", "ünïcödé ✓ 🎉", "", "z" * 100_000]
    assert res["buffered"][0] > 100_000  # without getters, updated as sends are queued and accepted
    # By the echo of the big message, the small sends before it have certainly been accepted (at most
    # four sends are in flight, and the big one took many chunks); the big one and the close command
    # may still await their answers, which can arrive after the echo.
    assert res["buffered"][-1] <= 100_000 + len("close:4004:old") < res["buffered"][0]
    assert res["close"] == [4004, "old", True]


def test_forced_transports(pages: PageFactory, browser_stack: BrowserStack) -> None:
    page = pages.open(native=True)
    for transport, expected in [
        ("relay", "xhr"),
        ("xhr", "xhr"),
        ("jsonp", "jsonp"),
        ("websocket", "websocket"),
    ]:
        res = page.evaluate("([t, o]) => psOpen(t, null, o)", [browser_stack.target, {"transport": transport}])
        assert res["ok"], res
        assert res["transport"] == expected


def test_install_only_where_missing(pages: PageFactory, browser_stack: BrowserStack) -> None:
    page = pages.open(native=True)
    assert page.evaluate("() => [PolySocket.install(), window.WebSocket === PolySocket]") == [False, False]
    page = pages.open(native=False)
    res = page.evaluate(
        """(args) => new Promise((resolve) => {
        const installed = PolySocket.install({router: args[0], token: args[1] || null});
        const ws = new WebSocket(args[2]);
        ws.onopen = () => ws.send('installed');
        ws.onmessage = (e) => resolve([installed, window.WebSocket === PolySocket, e.data,
                                       ws instanceof WebSocket, WebSocket.OPEN]);
        ws.onclose = (e) => resolve(['closed', e.code]);
    })""",
        [browser_stack.router, browser_stack.token, browser_stack.target],
    )
    assert res == [True, True, "installed", True, 1]


@pytest.mark.parametrize("mode", MODES)
def test_event_listeners(pages: PageFactory, browser_stack: BrowserStack, mode: str) -> None:
    page = open_page(pages, mode)
    res = page.evaluate(
        """([t, o]) => new Promise((resolve) => {
        const log = [];
        const s = new PolySocket(t, Object.assign({router: PS_ROUTER}, o));
        const a = (e) => log.push('a:' + e.type + ':' + (e.data === undefined ? '' : e.data));
        const b = {handleEvent: (e) => log.push('b:' + e.type)};
        const c = () => log.push('c');
        s.addEventListener('open', a); s.addEventListener('open', a);
        s.addEventListener('message', a); s.addEventListener('message', b);
        s.addEventListener('message', c); s.removeEventListener('message', c);
        s.addEventListener('message', () => { throw new Error('listener bug'); });
        s.addEventListener('error', (e) => log.push('error:' + e.message));
        s.addEventListener('close', (e) => { log.push('close:' + e.code + ':' + (e.target === s));
                                            resolve(log); });
        s.onopen = () => { log.push('onopen'); s.send('one'); };
        s.onmessage = (e) => { log.push('onmessage'); s.close(1000); };
    })""",
        [browser_stack.target, options_for(mode)],
    )
    # on<type> handlers run where they were registered among the listeners; no error events
    assert res == ["a:open:", "onopen", "a:message:one", "b:message", "onmessage", "close:1000:true"]
    assert any("listener bug" in e for e in page.page_errors)


# ------------------------------------------------------------------------------------------ demo page


@pytest.mark.parametrize("force_fallback", [False, True])
def test_demo_page(context: BrowserContext, browser_stack: BrowserStack, force_fallback: bool) -> None:
    page = context.new_page()
    url = f"{browser_stack.router}/client/demo.html"
    if browser_stack.token:
        url += f"?token={browser_stack.token}"
    page.goto(url)
    page.fill("#target", browser_stack.target)
    if force_fallback:
        page.check("#fallback")
    page.click("#connect")
    page.wait_for_function("document.querySelector('#state').textContent === 'open'")
    transport = page.text_content("#transport")
    assert transport == ("xhr" if force_fallback else "websocket")
    if force_fallback:
        page.wait_for_function("document.querySelector('#log').textContent.includes('receiving by stream')")
    page.fill("#message", "hi from the demo ✓")
    page.click("#send")
    page.wait_for_function("document.querySelector('#log').textContent.includes('< hi from the demo ✓')")
    page.click("#disconnect")
    page.wait_for_function("document.querySelector('#state').textContent === 'closed'")
    assert page.page_errors == []


# ------------------------------------------------------------------------------------------ batched sends

BURST = 1500


def burst(page: Any, sid: int) -> dict[str, float]:
    """Send BURST small messages at once; ms until the relay accepted all (bufferedAmount 0) and
    until all echoes are back."""
    res: dict[str, float] = page.evaluate(
        """([id, n]) => new Promise((resolve) => {
        const rec = psSocks[id], s = rec.s, start = performance.now(), base = rec.messages.length;
        let accepted = null;
        for (let i = 0; i < n; i++) s.send('b' + i);
        const tick = () => {
            if (accepted === null && s.bufferedAmount === 0) accepted = performance.now() - start;
            if (rec.messages.length - base >= n && rec.pending === 0 && accepted !== null) {
                resolve({accepted, echoed: performance.now() - start});
            } else setTimeout(tick, 2);
        };
        tick();
    })""",
        [sid, BURST],
    )
    return res


@pytest.mark.parametrize("mode", ["xhr", "jsonp"])
def test_burst_leaves_in_batches(
    pages: PageFactory, browser_stack: BrowserStack, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rates: dict[str, float] = {}
    requests: dict[str, int] = {}
    for label, options in [("one request per message", {"maxBatch": 1}), ("batched", {})]:
        page, read = pages.open_watched(native=False)
        sid = connect(page, browser_stack.target, mode, options=options)
        times = burst(page, sid)
        msgs = wait_messages(page, sid, BURST)
        # nothing lost, duplicated or reordered
        assert [m["d"] for m in msgs] == [f"b{i}" for i in range(BURST)]
        sends = [url for url, _ in read() if "/send?" in url]
        assert max(len(u) for u in sends) <= 2000
        rates[label] = BURST / times["accepted"] * 1000
        requests[label] = len(sends)
        page.close()
    with capsys.disabled():
        print(f"\n  {mode}: {BURST} sends in a burst, client->server: "
              + "; ".join(f"{k} {rates[k]:,.0f} msgs/s in {requests[k]} requests" for k in rates))
    assert requests["one request per message"] >= BURST
    # batched: what queues up while requests are in flight leaves together
    assert requests["batched"] <= BURST // 10


# ------------------------------------------------------------------------------------------ page load, CORS


class SlowResource(LoopbackServer):
    """An HTTP server on loopback that answers every request after ``delay`` seconds (an empty 200)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        super().__init__(backlog=8)

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            time.sleep(self.delay)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_jsonp_does_not_hold_the_load_event(pages: PageFactory, browser_stack: BrowserStack) -> None:
    # A page (an iframe) that opens a JSONP socket while it loads, and whose load also waits for an
    # image that takes 2 s: the socket connects and polls meanwhile; the load event must come when
    # the image is there, not when a long poll (pollTtl 20 s here) ends.
    slow = SlowResource(2.0)
    page = pages.open(native=False)
    try:
        res = page.evaluate(
            """([router, token, target, slow]) => new Promise((resolve) => {
            const f = document.createElement('iframe');
            const opts = JSON.stringify({router, token, transport: 'jsonp', pollTtl: 20000});
            f.srcdoc = '<script src="' + router + '/client/polysocket.js"><' + '/script><script>' +
                'window.got = []; window.s = new PolySocket(' + JSON.stringify(target) + ', ' + opts + ');' +
                's.onopen = function () { s.send("during load"); };' +
                's.onmessage = function (e) { got.push(e.data); };<' + '/script>' +
                '<img src="' + slow + '">';
            const held = setTimeout(() => resolve({loaded: false}), 12000);
            f.onload = () => {
                clearTimeout(held);
                const w = f.contentWindow;
                resolve({loaded: true, state: w.document.readyState, socket: w.s.readyState,
                         got: w.got.slice()});
            };
            document.body.appendChild(f);
        })""",
            [browser_stack.router, browser_stack.token, browser_stack.target, f"http://127.0.0.1:{slow.port}/img"],
        )
    finally:
        slow.close()
    assert res["loaded"], "the iframe's load event waited for a JSONP long poll"
    assert res["state"] == "complete"
    # the socket was open and working while the page loaded
    assert res["socket"] == 1 and res["got"] == ["during load"], res
    page.evaluate("() => document.querySelector('iframe').contentWindow.s.send('after load')")
    page.wait_for_function(
        "() => document.querySelector('iframe').contentWindow.got.join('|') === 'during load|after load'"
    )


def test_xhr_falls_back_to_jsonp_when_cors_fails(pages: PageFactory, browser_stack: BrowserStack) -> None:
    # The router on another origin (127.0.0.1 for a page on localhost), behind something that breaks
    # its CORS headers: the XHR /connect fails in the browser, the script-tag one gets through.
    port = urlsplit(browser_stack.router).port
    router = f"http://127.0.0.1:{port}"
    page = pages.open(native=False)
    stripped: list[str] = []

    def strip_cors(route: Any) -> None:
        response = route.fetch()
        if "cb=" in route.request.url:
            route.fulfill(response=response)
            return
        stripped.append(route.request.url)
        headers = {k: v for k, v in response.headers.items() if not k.lower().startswith("access-control-")}
        # (an explicit wrong origin: Playwright would otherwise allow a fulfilled CORS request itself)
        headers["access-control-allow-origin"] = "http://other.example"
        route.fulfill(status=response.status, headers=headers, body=response.body())

    page.route(f"{router}/connect?**", strip_cors)
    res = page.evaluate("([t, r]) => psOpen(t, null, {router: r})", [browser_stack.target, router])
    assert res["ok"], res
    assert res["transport"] == "jsonp"
    assert [e["type"] for e in res["events"]] == ["open"]
    assert len(stripped) == 1
    send(page, res["id"], "s.send('through jsonp')")
    assert wait_messages(page, res["id"], 1)[0]["d"] == "through jsonp"
    page.unroute_all(behavior="ignoreErrors")


# ------------------------------------------------------------------------------------------ install()


def frame_with(page: Any, html: str) -> Any:
    """Loads ``html`` into an iframe of the (router-origin) test page; resolves to its window once loaded."""
    page.evaluate(
        """(html) => new Promise((resolve) => {
        const f = document.createElement('iframe');
        f.srcdoc = html;
        f.onload = () => resolve();
        document.body.appendChild(f);
    })""",
        html,
    )
    return page.frames[-1]


def test_install_from_the_script_tag(pages: PageFactory, browser_stack: BrowserStack) -> None:
    # data-install: installed as the library loads, before any later script can capture WebSocket;
    # a "library" after it captures PolySocket.
    page = pages.open(native=True)
    warnings: list[str] = []
    page.on("console", lambda msg: warnings.append(msg.text) if msg.type == "warning" else None)
    r, t = browser_stack.router, browser_stack.token
    frame = frame_with(page, (
        "<script>delete window.WebSocket;</script>"
        f'<script src="{r}/client/polysocket.js" data-install data-router="{r}" data-token="{t}"></script>'
        "<script>window.Captured = window.WebSocket;</script>"))
    res = frame.evaluate(
        """(target) => new Promise((resolve) => {
        const ws = new Captured(target);
        ws.onopen = () => ws.send('captured');
        ws.onmessage = (e) => resolve([Captured === PolySocket, ws.transport, e.data, PolySocket.installedLate]);
        ws.onclose = (e) => resolve(['closed', e.code]);
    })""",
        browser_stack.target,
    )
    assert res == [True, "xhr", "captured", False]
    assert warnings == []
    # data-install="replace" takes the place of a native WebSocket too (auto then uses it first)
    frame = frame_with(page, f'<script src="{r}/client/polysocket.js" data-install="replace"></script>')
    assert frame.evaluate("() => [window.WebSocket === PolySocket, PolySocket.NativeWebSocket !== null]") == [
        True, True]


def test_late_install_warns(pages: PageFactory, browser_stack: BrowserStack) -> None:
    page = pages.context.new_page()
    console = page.watch_console()
    pages.open(native=False, page=page)
    # the test page has long finished loading: a library on it could have captured WebSocket already
    assert page.evaluate("() => [PolySocket.install(), PolySocket.installedLate]") == [True, True]
    page.wait_for_timeout(100)
    warnings = [text for kind, text in console() if kind == "warning"]
    assert len(warnings) == 1 and "install() ran after the page finished loading" in warnings[0]


# ------------------------------------------------------------------------------------------ a relay that dies


@pytest.mark.parametrize("mode", ["xhr", "jsonp"])
def test_dead_relay_is_a_close_1006_within_its_idle_timeout(
    pages: PageFactory, browser_stack: BrowserStack, mode: str
) -> None:
    page = open_page(pages, mode)
    idle = 3000

    def short_idle(route: Any) -> None:
        # the router tells the client the relay's idle timeout; make it short for the test
        response = route.fetch()
        body = response.text()
        assert '"idle":60000' in body, body
        route.fulfill(response=response, body=body.replace('"idle":60000', f'"idle":{idle}'))

    page.route("**/connect?**", short_idle)
    # polls (routes cannot end a stream already open; test_stream.py kills a relay under one)
    sid = connect(page, browser_stack.target, mode, options={"receive": "poll"})
    assert page.evaluate("(id) => psSocks[id].s._carrier.idle", sid) == idle
    send(page, sid, "s.send('alive')")
    wait_messages(page, sid, 1)
    # The relay dies (SIGKILL): from now on every request to it fails at the network level.
    page.route("**/poll?**", lambda route: route.abort("connectionrefused"))
    page.route("**/send?**", lambda route: route.abort("connectionrefused"))
    page.evaluate("(id) => { psSocks[id].blockedAt = performance.now(); psSocks[id].s.send('into the void'); }", sid)
    res = wait_close(page, sid, timeout_ms=30_000)
    after = page.evaluate(
        "(id) => psSocks[id].closedAt - psSocks[id].blockedAt",
        sid,
    )
    # close 1006 alone, as for a dropped native socket
    assert [e["type"] for e in res["events"]] == ["open", "close"]
    assert res["close"]["code"] == 1006 and res["close"]["wasClean"] is False
    assert "no answer from the relay" in page.evaluate("(id) => psSocks[id].s.lastError", sid)
    # the documented bound: idle after the relay's last answer (a poll already under way when it
    # died may still have been answered: at most ttl = idle / 2 later), plus timer delays
    assert idle - 100 <= after <= idle + idle // 2 + 5000, after
    page.unroute_all(behavior="ignoreErrors")


@pytest.mark.parametrize("mode", ["xhr", "jsonp"])
def test_batches_with_lost_answers_lose_and_double_nothing(
    pages: PageFactory, browser_stack: BrowserStack, mode: str
) -> None:
    # Every third send answer is lost after the relay took the batch: the client retries the same
    # frames, the relay drops what it has; meanwhile later batches go ahead (within the seq window).
    page = open_page(pages, mode)
    seen = [0]
    lost: list[str] = []
    batches: list[str] = []

    def handle(route: Any) -> None:
        response = fetch_via_loopback(route)
        seen[0] += 1
        if "batch=" in route.request.url:
            batches.append(route.request.url)
        if seen[0] % 3 == 0:
            lost.append(route.request.url)
            route.abort("connectionreset")
            return
        route.fulfill(response=response)

    page.route("**/send?**", handle)
    sid = connect(page, browser_stack.target, mode)
    send(page, sid, f"for (let i = 0; i < {BURST}; i++) s.send('L' + i)")
    msgs = wait_messages(page, sid, BURST, timeout_ms=120_000)
    page.wait_for_timeout(500)  # a duplicate would arrive now
    msgs = wait_messages(page, sid, BURST)
    assert [m["d"] for m in msgs] == [f"L{i}" for i in range(BURST)]
    assert len(lost) >= 3 and len(batches) >= 3
    page.unroute_all(behavior="ignoreErrors")


def test_throughput_both_ways_against_native(
    pages: PageFactory, browser_stack: BrowserStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # For the record (printed, not asserted): client->server (a burst of sends, until accepted)
    # and server->client (the target floods) in msgs/s, each transport next to the native socket.
    lines = []
    for mode in MODES:
        page = open_page(pages, mode)
        sid = connect(page, browser_stack.target, mode)
        up = burst(page, sid)
        assert [m["d"] for m in wait_messages(page, sid, BURST)] == [f"b{i}" for i in range(BURST)]
        start = page.evaluate("() => performance.now()")
        send(page, sid, f"s.send('flood:{BURST}')")
        msgs = wait_messages(page, sid, 2 * BURST, timeout_ms=60_000)
        down_ms = page.evaluate("() => performance.now()") - start
        assert [m["d"] for m in msgs[BURST:]] == [str(i) for i in range(BURST)]
        lines.append(f"{mode}: client->server {BURST / up['accepted'] * 1000:,.0f} msgs/s, "
                     f"server->client {BURST / down_ms * 1000:,.0f} msgs/s")
        page.close()
    with capsys.disabled():
        print("\n  " + "\n  ".join(lines))
