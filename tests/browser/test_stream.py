"""The streaming receive transport of polysocket.js in a real Chromium, against real relays.

An XHR relay socket receives through one long ``GET /stream`` (text/event-stream), read by
``EventSource`` where the browser has it (``eventsource``) or by xhr-streaming where it does not
(``xhr-streaming``: ``window.EventSource`` deleted before the library loads). Each behaviour runs
both ways: messages in order, resuming across the relay's byte budget and across streams cut in the
middle of a message with nothing lost or doubled, acks riding on sends past the relay's
back-pressure bound, and the fallback to long-polling behind a proxy that buffers whole answers.
"""

from __future__ import annotations

import base64
import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from psbrowser import BrowserStack, PageFactory, browser_url
from psproxy import RelayProxy
from test_client import UNICODE, connect, fetch_via_loopback, send, wait_close, wait_messages

from polysocket_cli.processes import Stack

pytestmark = [pytest.mark.browser, pytest.mark.stack]

KINDS = ["eventsource", "xhr-streaming"]
HIDE_EVENTSOURCE = "delete window.EventSource;"


class Requests:
    """Every request the page makes: (url, kind as Playwright names resource types)."""

    def __init__(self, read: Callable[[], list[tuple[str, str]]]) -> None:
        self.read = read

    @property
    def seen(self) -> list[tuple[str, str]]:
        return self.read()

    def to(self, path: str) -> list[tuple[str, str]]:
        return [(u, t) for u, t in self.seen if urlsplit(u).path == path]

    def params(self, path: str) -> list[dict[str, str]]:
        return [{k: v[0] for k, v in parse_qs(urlsplit(u).query).items()} for u, _ in self.to(path)]


def open_stream_page(pages: PageFactory, kind: str) -> tuple[Any, Requests]:
    page, read = pages.open_watched(native=False, init_script=HIDE_EVENTSOURCE if kind == "xhr-streaming" else "")
    assert page.evaluate("() => PolySocket.supports.eventsource") is (kind == "eventsource")
    return page, Requests(read)


def receiving(page: Any, sid: int) -> str:
    return str(page.evaluate("(id) => psSocks[id].s.receiving", sid))


def check_streams(reqs: Requests, kind: str) -> list[dict[str, str]]:
    """The socket received by stream only, read the way ``kind`` says; returns the streams' params."""
    streams = reqs.to("/stream")
    assert streams
    assert {t for _, t in streams} == {"eventsource" if kind == "eventsource" else "xhr"}
    params = reqs.params("/stream")
    assert all(("pad" in p) is (kind == "xhr-streaming") for p in params)
    assert reqs.to("/poll") == []
    return params


def wait_for(page: Any, js: str, arg: Any, timeout_ms: int = 20_000) -> None:
    page.wait_for_function(js, arg=arg, timeout=timeout_ms)


def start_stack(relay_args: list[str]) -> tuple[Stack, BrowserStack]:
    s = Stack()
    try:
        s.start_valkey()
        s.start_relay("node1", extra=relay_args)
        router = s.start_router()
        token = s.create_token()
        echo = s.start_echo()
    except BaseException:
        s.stop()
        raise
    return s, BrowserStack(router=browser_url(f"http://127.0.0.1:{router.port}"),
                           targets={"websockets": f"ws://127.0.0.1:{echo.port}/"}, token=token)


@pytest.fixture(scope="module")
def budget_stack() -> Iterator[BrowserStack]:
    """A relay that ends every stream after 1 KiB of messages: an exchange spans many streams."""
    s, bs = start_stack(["--stream-bytes", "1024"])
    try:
        yield bs
    finally:
        s.stop()


@pytest.fixture
def proxies() -> Iterator[dict[int, RelayProxy]]:
    made: dict[int, RelayProxy] = {}
    yield made
    for proxy in made.values():
        proxy.close()


def through_proxy(page: Any, proxies: dict[int, RelayProxy], mode: str, cut_after: int = 4000) -> None:
    """Every request after /connect reaches the relay through a RelayProxy: the connect answer's
    fqdn (the socket's own host name) gets the proxy's port instead of the relay's."""

    def rewrite(route: Any) -> None:
        response = route.fetch()
        body = response.text()
        m = re.search(r'"fqdn":"([^":]+):(\d+)"', body)
        assert m, body
        relay_port = int(m.group(2))
        if relay_port not in proxies:
            proxies[relay_port] = RelayProxy(relay_port, mode, cut_after)
        body = body.replace(m.group(0), f'"fqdn":"{m.group(1)}:{proxies[relay_port].port}"')
        route.fulfill(response=response, body=body)

    page.route("**/connect?**", rewrite)


# ------------------------------------------------------------------------------------------ the stream itself


@pytest.mark.parametrize("kind", KINDS)
def test_messages_arrive_by_stream(pages: PageFactory, browser_stack: BrowserStack, kind: str) -> None:
    page, reqs = open_stream_page(pages, kind)
    sid = connect(page, browser_stack.target, "xhr")
    assert receiving(page, sid) == "stream"
    texts = ["hello", UNICODE, "", "lone \ud800 surrogate"]
    page.evaluate("([id, texts]) => texts.forEach((t) => psSocks[id].s.send(t))", [sid, texts])
    send(page, sid, "const b = new Uint8Array(256); for (let i = 0; i < 256; i++) b[i] = i; s.send(b)")
    msgs = wait_messages(page, sid, 5)
    assert [m["d"] for m in msgs[:4]] == [*texts[:3], "lone \ufffd surrogate"]
    assert msgs[4]["t"] == "arraybuffer" and base64.b64decode(msgs[4]["d"]) == bytes(range(256))
    send(page, sid, "s.send('flood:300')")
    msgs = wait_messages(page, sid, 305)
    assert [m["d"] for m in msgs[5:]] == [str(i) for i in range(300)]
    send(page, sid, "s.send('after')")
    assert wait_messages(page, sid, 306)[305]["d"] == "after"
    check_streams(reqs, kind)
    # sends carry the highest seq processed (absent before the first message)
    acks = [int(p["ack"]) for p in reqs.params("/send") if "ack" in p]
    assert acks and acks == sorted(acks) and acks[-1] >= 304
    # the target's close comes by the stream, and is acknowledged as with polling (a ttl=0 poll)
    send(page, sid, "s.send('close:4001:by stream')")
    res = wait_close(page, sid)
    assert res["close"] == {"type": "close", "code": 4001, "reason": "by stream", "wasClean": True, "readyState": 3}
    deadline = time.monotonic() + 10
    while not reqs.to("/poll") and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert [(p["ttl"], p["ack"]) for p in reqs.params("/poll")] == [("0", "306")]
    assert page.page_errors == []


@pytest.mark.parametrize("kind", KINDS)
def test_resume_across_byte_budgets_loses_and_doubles_nothing(
    context: Any, budget_stack: BrowserStack, kind: str
) -> None:
    page, reqs = open_stream_page(PageFactory(context, budget_stack), kind)
    sid = connect(page, budget_stack.target, "xhr")
    n = 300
    send(page, sid, f"for (let i = 0; i < {n}; i++) s.send('m' + i + '-' + 'x'.repeat(i % 97))")
    send(page, sid, "s.send('flood:200')")
    msgs = wait_messages(page, sid, n + 200, timeout_ms=60_000)
    page.wait_for_timeout(500)  # a duplicate would arrive now
    msgs = wait_messages(page, sid, n + 200)
    assert [m["d"] for m in msgs] == [f"m{i}-" + "x" * (i % 97) for i in range(n)] + [str(i) for i in range(200)]
    params = check_streams(reqs, kind)
    # ~30 KiB of messages through streams of 1 KiB: many streams, each resumed from the last seq processed
    assert len(params) >= 10
    acks = [int(p["ack"]) for p in params]
    assert acks[0] == -1 and acks == sorted(acks) and acks[-1] > n
    assert receiving(page, sid) == "stream"
    send(page, sid, "s.close(1000, 'bye')")
    assert wait_close(page, sid)["close"]["code"] == 1000


@pytest.mark.parametrize("kind", KINDS)
def test_streams_cut_mid_message_resume_without_loss(
    pages: PageFactory, browser_stack: BrowserStack, proxies: dict[int, RelayProxy], kind: str
) -> None:
    page, reqs = open_stream_page(pages, kind)
    through_proxy(page, proxies, "cut")
    sid = connect(page, browser_stack.target, "xhr")
    send(page, sid, "s.send('flood:1500')")
    msgs = wait_messages(page, sid, 1500, timeout_ms=60_000)
    send(page, sid, "s.send('end')")
    msgs = wait_messages(page, sid, 1501)
    assert [m["d"] for m in msgs] == [str(i) for i in range(1500)] + ["end"]
    (proxy,) = proxies.values()
    assert proxy.cuts >= 5
    assert len(proxy.stream_paths()) > proxy.cuts
    assert receiving(page, sid) == "stream"  # a stream cut after its first byte is resumed, not given up
    check_streams(reqs, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_acks_on_sends_keep_a_long_stream_flowing(
    pages: PageFactory, browser_stack: BrowserStack, kind: str
) -> None:
    # The session's relays pause reading from the target at 64 KiB of unacknowledged messages
    # (--buffer-bytes 65536), and a stream carries 128 KiB: ~90 KiB echoed in waves passes the
    # bound within one stream only because each wave's sends acknowledge the waves before it.
    page, reqs = open_stream_page(pages, kind)
    sid = connect(page, browser_stack.target, "xhr")
    waves, per_wave, size = 30, 10, 300
    for w in range(waves):
        send(page, sid, f"for (let i = 0; i < {per_wave}; i++) s.send('{w:02d}' + i + '.'.repeat({size}))")
        wait_messages(page, sid, (w + 1) * per_wave)
    msgs = wait_messages(page, sid, waves * per_wave)
    assert [m["d"] for m in msgs] == [f"{w:02d}{i}" + "." * size for w in range(waves) for i in range(per_wave)]
    assert len(check_streams(reqs, kind)) == 1
    acks = [int(p["ack"]) for p in reqs.params("/send") if "ack" in p]
    assert len(acks) >= waves - 1 and acks[-1] >= (waves - 1) * per_wave - 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_flood_with_no_sends_renews_its_stream_to_ack(
    pages: PageFactory, browser_stack: BrowserStack, kind: str
) -> None:
    # ~110 KiB of messages and no send to carry an ack: past 64 KiB unacknowledged the relay would
    # stop reading from the target (until the stream's time budget); the client renews its stream
    # (whose request carries the ack) every 32 KiB of messages instead.
    page, reqs = open_stream_page(pages, kind)
    sid = connect(page, browser_stack.target, "xhr")
    send(page, sid, "s.send('flood:3000')")
    msgs = wait_messages(page, sid, 3000, timeout_ms=60_000)
    assert [m["d"] for m in msgs] == [str(i) for i in range(3000)]
    params = check_streams(reqs, kind)
    acks = [int(p["ack"]) for p in params]
    assert 3 <= len(acks) <= 10 and acks == sorted(acks)


# ------------------------------------------------------------------------------------------ falling back


@pytest.mark.parametrize("kind", KINDS)
def test_buffering_proxy_falls_back_to_polling(
    pages: PageFactory, browser_stack: BrowserStack, proxies: dict[int, RelayProxy], kind: str
) -> None:
    page, reqs = open_stream_page(pages, kind)
    through_proxy(page, proxies, "buffer")
    sid = connect(page, browser_stack.target, "xhr", options={"streamTimeout": 1500})
    assert receiving(page, sid) == "stream"
    send(page, sid, "for (let i = 0; i < 20; i++) s.send('early' + i)")
    wait_for(page, "(id) => psSocks[id].s.receiving === 'poll'", sid)
    msgs = wait_messages(page, sid, 20)
    send(page, sid, "s.send('flood:200')")
    msgs = wait_messages(page, sid, 220)
    assert [m["d"] for m in msgs] == [f"early{i}" for i in range(20)] + [str(i) for i in range(200)]
    (proxy,) = proxies.values()
    assert len(proxy.stream_paths()) == 1  # one try, then polls for the rest of the socket's life
    assert len(reqs.to("/poll")) >= 2
    page.wait_for_timeout(300)
    assert len(reqs.to("/stream")) == 1
    send(page, sid, "s.send('close:4002:polled')")
    assert wait_close(page, sid)["close"]["code"] == 4002
    assert len(wait_messages(page, sid, 220)) == 220


@pytest.mark.parametrize("kind", KINDS)
def test_a_relay_without_streams_is_polled(pages: PageFactory, browser_stack: BrowserStack, kind: str) -> None:
    # An older relay answers /stream with a JSON 404: the first stream fails before its first byte,
    # and the socket polls from then on (long before streamTimeout).
    page, reqs = open_stream_page(pages, kind)
    refused: list[str] = []

    def not_found(route: Any) -> None:
        refused.append(route.request.url)
        route.fulfill(status=404, content_type="application/json",
                      headers={"access-control-allow-origin": "*"},
                      body='{"ok":false,"error":"not_found","message":"no such endpoint"}')

    page.route("**/stream?**", not_found)
    sid = connect(page, browser_stack.target, "xhr", options={"streamTimeout": 60_000})
    send(page, sid, "s.send('one'); s.send('two')")
    assert [m["d"] for m in wait_messages(page, sid, 2, timeout_ms=20_000)] == ["one", "two"]
    assert receiving(page, sid) == "poll"
    assert len(refused) == 1 and len(reqs.to("/poll")) >= 1
    page.unroute_all(behavior="ignoreErrors")


def test_a_stream_that_falls_silent_is_replaced_then_given_up(
    pages: PageFactory, browser_stack: BrowserStack, proxies: dict[int, RelayProxy]
) -> None:
    # xhr-streaming sees the relay's heartbeats: a stream that shows its opening, then nothing (not
    # even a heartbeat) for ttl + pollSlack is dead; it is replaced, and when the new one falls
    # silent too the socket polls. (EventSource cannot see heartbeats: it renews a quiet stream
    # after ttl instead, and so cannot tell this proxy from a quiet socket.)
    page, reqs = open_stream_page(pages, "xhr-streaming")
    # the opening chunk passes (pad=1: a 2,051-byte comment, 0x803), then nothing
    through_proxy(page, proxies, "stall", cut_after=len(b"803\r\n") + 2051 + len(b"\r\n"))
    sid = connect(page, browser_stack.target, "xhr", options={"pollTtl": 1000, "pollSlack": 1000})
    send(page, sid, "s.send('held')")
    wait_for(page, "(id) => psSocks[id].s.receiving === 'poll'", sid)
    send(page, sid, "s.send('polled')")
    assert [m["d"] for m in wait_messages(page, sid, 2)] == ["held", "polled"]
    (proxy,) = proxies.values()
    assert len(proxy.stream_paths()) == len(reqs.to("/stream")) == 2


def test_receive_option(pages: PageFactory, browser_stack: BrowserStack) -> None:
    page, read = pages.open_watched(native=False)
    reqs = Requests(read)
    polled = connect(page, browser_stack.target, "xhr", options={"receive": "poll"})
    assert receiving(page, polled) == "poll"
    xhr_stream = connect(page, browser_stack.target, "xhr", options={"receive": "xhr-streaming"})
    assert receiving(page, xhr_stream) == "stream"
    jsonp = connect(page, browser_stack.target, "jsonp", options={"receive": "eventsource"})
    assert receiving(page, jsonp) == "poll"  # JSONP always polls
    for sid in (polled, xhr_stream, jsonp):
        send(page, sid, "s.send('hi')")
        assert wait_messages(page, sid, 1)[0]["d"] == "hi"
    assert {t for _, t in reqs.to("/stream")} == {"xhr"}
    assert page.evaluate("() => PolySocket.defaults.receive") == "auto"
    err = page.evaluate("(t) => { try { new PolySocket(t, {receive: 'sse'}); } catch (e) { return e.name; } }",
                        browser_stack.target)
    assert err == "SyntaxError"


@pytest.mark.parametrize("kind", KINDS)
def test_killed_relay_ends_the_stream_and_the_socket(context: Any, kind: str) -> None:
    # A relay killed mid-stream: the stream ends, its resumption fails before a first byte, the
    # socket polls, the polls fail, and close 1006 comes within the relay's idle timeout.
    s, bs = start_stack([])
    try:
        page, _ = open_stream_page(PageFactory(context, bs), kind)
        idle = 3000

        def short_idle(route: Any) -> None:
            response = fetch_via_loopback(route)
            route.fulfill(response=response, body=response.text().replace('"idle":60000', f'"idle":{idle}'))

        page.route("**/connect?**", short_idle)
        sid = connect(page, bs.target, "xhr")
        send(page, sid, "s.send('alive')")
        wait_messages(page, sid, 1)
        page.wait_for_timeout(idle)  # quiet for a whole idle timeout: heartbeats (or renewals) keep it open
        assert page.evaluate("(id) => psSocks[id].s.readyState", sid) == 1
        relay = next(p for p in s.procs if p.name.startswith("relay-"))
        relay.signal(signal.SIGKILL)
        res = wait_close(page, sid, timeout_ms=30_000)
        assert [e["type"] for e in res["events"]] == ["open", "close"]
        assert res["close"]["code"] == 1006 and res["close"]["wasClean"] is False
        assert receiving(page, sid) == "poll"
    finally:
        s.stop()


def test_receive_rates_for_the_record(
    pages: PageFactory, browser_stack: BrowserStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Printed, not asserted, per receive mode of the XHR transport (each also checks order and
    # count): the target floods 3,000 messages (msgs/s, receive requests), then 300 ping-pongs
    # (ms and HTTP requests per round trip).
    n = 3000
    lines = []
    for label, hide, receive in [("poll", False, "poll"), ("eventsource", False, "auto"),
                                 ("xhr-streaming", True, "auto")]:
        page, read = pages.open_watched(native=False, init_script=HIDE_EVENTSOURCE if hide else "")
        reqs = Requests(read)
        sid = connect(page, browser_stack.target, "xhr", options={"receive": receive})
        start = page.evaluate("() => performance.now()")
        send(page, sid, f"s.send('flood:{n}')")
        msgs = wait_messages(page, sid, n, timeout_ms=60_000)
        ms = page.evaluate("() => performance.now()") - start
        assert [m["d"] for m in msgs] == [str(i) for i in range(n)]
        received = len(reqs.to("/poll")) + len(reqs.to("/stream"))
        # ping-pong: one message out, wait for its echo, 300 times (as an interactive app does)
        before = len(reqs.seen)
        rtt = page.evaluate(
            """(id) => new Promise((resolve) => {
            const rec = psSocks[id], base = rec.messages.length, start = performance.now();
            let k = 0;
            const next = () => {
                if (k === 300) { resolve((performance.now() - start) / 300); return; }
                rec.s.send('p' + k);
                const want = base + ++k;
                const wait = () => (rec.messages.length >= want && rec.pending === 0) ? next() : setTimeout(wait, 0);
                wait();
            };
            next();
        })""",
            sid,
        )
        assert [m["d"] for m in wait_messages(page, sid, n + 300)[n:]] == [f"p{k}" for k in range(300)]
        per = (len(reqs.seen) - before) / 300
        lines.append(f"{label}: flood server->client {n / ms * 1000:,.0f} msgs/s in {received} receive requests; "
                     f"ping-pong {rtt:.2f} ms and {per:.2f} requests per round trip")
        page.close()
    with capsys.disabled():
        print("\n  " + "\n  ".join(lines))
