"""Real WebSocket libraries, unchanged, through polysocket.js (issue 11, "Real libraries in CI").

Each library's browser bundle talks to that library's own unmodified server, started as a Node
process on loopback (tests/targets/*.mjs): mqtt.js 5 + aedes, socket.io-client 4 (websocket
transport) + socket.io 4, graphql-ws 6 + its `ws` server. The page runs
``PolySocket.install(..., {replace: true})`` before the bundle is inlined, as docs/client.md tells
a user to, so the library's ``new WebSocket()`` is a PolySocket, three ways:

* ``websocket``: the browser's WebSocket exists; PolySocket (``auto``) uses it natively;
* ``xhr``: ``window.WebSocket`` deleted before polysocket.js loads; ``auto`` picks CORS XHR;
* ``jsonp``: ``window.WebSocket`` deleted and ``transport: "jsonp"`` in the installed defaults.

Every socket the library makes is recorded (a transparent ``Proxy`` over the installed
constructor), so each test also checks that the traffic really went over the mode's transport.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psbrowser import PageFactory

from polysocket_cli.processes import Proc, free_port, wait_port

pytestmark = [pytest.mark.browser, pytest.mark.stack]

MODES = ["websocket", "xhr", "jsonp"]
TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"
NODE_MODULES = TARGETS_DIR / "node_modules"
BUNDLES = {
    "mqtt": NODE_MODULES / "mqtt" / "dist" / "mqtt.min.js",
    "socketio": NODE_MODULES / "socket.io-client" / "dist" / "socket.io.min.js",
    "graphql": NODE_MODULES / "graphql-ws" / "umd" / "graphql-ws.min.js",
}
SERVERS = {"mqtt": "mqtt_broker.mjs", "socketio": "socketio_server.mjs", "graphql": "graphql_server.mjs"}
UNICODE = "héllo ✓ 日本語 \U0001d11e 🎉"

# Runs right after polysocket.js, before any library bundle: install(), then a transparent Proxy
# that records every socket the library constructs (window.psLib.sockets).
INSTALL = r"""
(function () {
  const defaults = {router: window.PS_ROUTER, token: window.PS_TOKEN || null};
  if (window.PS_MODE === "jsonp") defaults.transport = "jsonp";
  PolySocket.install(defaults, {replace: true});
  if (window.WebSocket !== PolySocket) throw new Error("install() did not set window.WebSocket");
  window.psLib = {sockets: []};
  window.WebSocket = new Proxy(PolySocket, {
    construct(target, args) {
      const s = Reflect.construct(target, args);
      psLib.sockets.push(s);
      return s;
    },
  });
})();
"""

# Small in-page helpers shared by the library tests.
HELPERS = r"""
window.psLibSockets = () => psLib.sockets.map((s) => ({
  transport: s.transport, protocol: s.protocol, readyState: s.readyState, url: s.url,
}));
window.psB64 = (bytes) => {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
};
window.psBytes = (b64) => {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
};
window.psWithin = (ms, what, promise) => Promise.race([
  promise,
  new Promise((_, reject) => setTimeout(() => reject(new Error("timed out: " + what)), ms)),
]);
window.psSleep = (ms) => new Promise((r) => setTimeout(r, ms));
window.psUntil = async (ms, what, cond) => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out: " + what);
    await psSleep(20);
  }
};
"""


def _need_node_modules() -> str:
    """The Node side missing fails the test (never a skip): `make deps` installs it."""
    node = shutil.which("node")
    missing = [
        str(p) for p in [*BUNDLES.values(), NODE_MODULES / "aedes", NODE_MODULES / "socket.io"] if not p.exists()
    ]
    if node is None or missing:
        pytest.fail(f"Node.js and tests/targets/node_modules are required ({missing or 'node'}): run `make deps`")
    return node


@pytest.fixture(scope="module")
def lib_servers() -> Iterator[dict[str, str]]:
    """The three libraries' own servers as Node processes on loopback: name -> ws:// URL."""
    node = _need_node_modules()
    procs: list[Proc] = []
    urls: dict[str, str] = {}
    try:
        for name, script in SERVERS.items():
            port = free_port()
            popen = subprocess.Popen(
                [node, str(TARGETS_DIR / script), str(port)],
                cwd=TARGETS_DIR,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(Proc(name, popen, port))
            wait_port(port, proc=popen)
            urls[name] = f"ws://127.0.0.1:{port}/"
        yield urls
    finally:
        for proc in procs:
            proc.stop()


def lib_page(pages: PageFactory, mode: str, library: str) -> Any:
    """The router-origin test page with PolySocket installed for ``mode``, then the library bundle."""
    page = pages.open(
        native=(mode == "websocket"),
        init_script=f"window.PS_MODE = {mode!r};",
        after_load=INSTALL,
    )
    page.add_script_tag(path=str(BUNDLES[library]))
    page.add_script_tag(content=HELPERS)
    return page


def check_sockets(page: Any, mode: str, protocol: str = "", at_least: int = 1) -> list[dict[str, Any]]:
    """Every socket the library made went over ``mode`` (and negotiated ``protocol``)."""
    socks: list[dict[str, Any]] = page.evaluate("() => psLibSockets()")
    assert len(socks) >= at_least, socks
    for s in socks:
        assert s["transport"] == mode, socks
        if protocol:
            assert s["protocol"] == protocol, socks
    return socks


def no_page_errors(page: Any) -> None:
    assert page.page_errors == []


def sample_bytes(n: int) -> bytes:
    """All 256 byte values, then a deterministic pseudo-random tail."""
    head = bytes(range(256))
    tail = hashlib.shake_256(b"polysocket").digest(max(0, n - 256))
    return (head + tail)[:n]


# ------------------------------------------------------------------------------------------ mqtt.js

MQTT_CONNECT = r"""
async (url) => {
  window.mq = {msgs: [], events: [], received: []};
  const c = mqtt.connect(url, {
    clientId: "ps-" + Math.random().toString(16).slice(2), reconnectPeriod: 200, connectTimeout: 30000,
  });
  window.mqc = c;
  c.on("message", (topic, payload, packet) => {
    mq.msgs.push({topic, b64: psB64(payload), text: new TextDecoder().decode(payload), qos: packet.qos});
  });
  c.on("packetreceive", (p) => mq.received.push(p.cmd));
  for (const ev of ["connect", "reconnect", "close", "offline", "error"]) {
    c.on(ev, (e) => mq.events.push(ev === "error" ? "error:" + e.message : ev));
  }
  await psWithin(30000, "mqtt connect", new Promise((resolve) => c.once("connect", resolve)));
}
"""


def mqtt_connect(page: Any, url: str) -> None:
    page.evaluate(MQTT_CONNECT, url)


@pytest.mark.parametrize("mode", MODES)
def test_mqtt_subscribe_publish_round_trip(pages: PageFactory, lib_servers: dict[str, str], mode: str) -> None:
    page = lib_page(pages, mode, "mqtt")
    mqtt_connect(page, lib_servers["mqtt"])
    res = page.evaluate(
        """async (text) => {
          const granted = await mqc.subscribeAsync("ps/rt/+");
          await mqc.publishAsync("ps/rt/a", text);
          await mqc.publishAsync("ps/other", "not for us");
          await mqc.publishAsync("ps/rt/b", "second");
          await psUntil(20000, "2 messages", () => mq.msgs.length >= 2);
          await psSleep(100);
          return {granted, msgs: mq.msgs, events: mq.events};
        }""",
        UNICODE,
    )
    assert [g["topic"] for g in res["granted"]] == ["ps/rt/+"]
    assert [(m["topic"], m["text"]) for m in res["msgs"]] == [("ps/rt/a", UNICODE), ("ps/rt/b", "second")]
    assert res["events"] == ["connect"]
    check_sockets(page, mode, protocol="mqtt")
    no_page_errors(page)


@pytest.mark.parametrize("mode", MODES)
def test_mqtt_qos1(pages: PageFactory, lib_servers: dict[str, str], mode: str) -> None:
    page = lib_page(pages, mode, "mqtt")
    mqtt_connect(page, lib_servers["mqtt"])
    res = page.evaluate(
        """async () => {
          const granted = await mqc.subscribeAsync("ps/q1", {qos: 1});
          mq.received = [];
          await Promise.all(Array.from({length: 50}, (_, i) => mqc.publishAsync("ps/q1", "m" + i, {qos: 1})));
          await psUntil(20000, "50 messages", () => mq.msgs.length >= 50);
          return {granted, pubacks: mq.received.filter((c) => c === "puback").length, msgs: mq.msgs};
        }"""
    )
    assert [g["qos"] for g in res["granted"]] == [1]
    assert res["pubacks"] == 50  # the broker acknowledged every QoS 1 publish
    assert [m["text"] for m in res["msgs"]] == [f"m{i}" for i in range(50)]
    assert {m["qos"] for m in res["msgs"]} == {1}
    check_sockets(page, mode, protocol="mqtt")
    no_page_errors(page)


@pytest.mark.parametrize("mode", MODES)
def test_mqtt_binary_payload_byte_exact(pages: PageFactory, lib_servers: dict[str, str], mode: str) -> None:
    page = lib_page(pages, mode, "mqtt")
    mqtt_connect(page, lib_servers["mqtt"])
    payloads = [sample_bytes(256), sample_bytes(100_000)]
    res = page.evaluate(
        """async (b64s) => {
          await mqc.subscribeAsync("ps/bin", {qos: 1});
          for (const b of b64s) await mqc.publishAsync("ps/bin", psBytes(b), {qos: 1});
          await psUntil(30000, "binary messages", () => mq.msgs.length >= b64s.length);
          return mq.msgs.map((m) => m.b64);
        }""",
        [base64.b64encode(p).decode() for p in payloads],
    )
    assert [base64.b64decode(b) for b in res] == payloads
    check_sockets(page, mode, protocol="mqtt")
    no_page_errors(page)


@pytest.mark.parametrize("mode", MODES)
def test_mqtt_reconnects_after_server_drop(pages: PageFactory, lib_servers: dict[str, str], mode: str) -> None:
    page = lib_page(pages, mode, "mqtt")
    mqtt_connect(page, lib_servers["mqtt"])
    res = page.evaluate(
        """async () => {
          await mqc.subscribeAsync("ps/rc", {qos: 1});
          mqc.publish("ctl/drop", "");
          await psUntil(30000, "reconnect", () => mq.events.filter((e) => e === "connect").length >= 2);
          await mqc.subscribeAsync("ps/rc", {qos: 1});
          await mqc.publishAsync("ps/rc", "after", {qos: 1});
          await psUntil(20000, "message after reconnect", () => mq.msgs.length >= 1);
          return {events: mq.events, msgs: mq.msgs.map((m) => m.text)};
        }"""
    )
    events = res["events"]
    assert events[0] == "connect" and "close" in events and "reconnect" in events, events
    assert events.count("connect") == 2, events
    assert res["msgs"] == ["after"]
    socks = check_sockets(page, mode, protocol="mqtt", at_least=2)
    assert socks[0]["readyState"] == 3 and socks[-1]["readyState"] == 1, socks
    no_page_errors(page)


# ---------------------------------------------------------------------------------- socket.io-client

SIO_CONNECT = r"""
async (url) => {
  window.so = {events: [], hellos: [], f: []};
  const s = io(url, {transports: ["websocket"], reconnectionDelay: 200, reconnectionDelayMax: 1000});
  window.sio = s;
  s.on("hello", (h) => so.hellos.push(h.conn));
  s.on("f", (i) => so.f.push(i));
  s.on("connect", () => so.events.push("connect"));
  s.on("disconnect", (reason) => so.events.push("disconnect:" + reason));
  s.on("connect_error", (e) => so.events.push("connect_error:" + e.message));
  s.io.on("reconnect", () => so.events.push("reconnect"));
  await psWithin(30000, "socket.io connect", new Promise((resolve) => s.once("connect", resolve)));
  await psUntil(10000, "hello", () => so.hellos.length >= 1);
}
"""


def sio_connect(page: Any, url: str) -> None:
    page.evaluate(SIO_CONNECT, url)


@pytest.mark.parametrize("mode", MODES)
def test_socketio_emit_ack_round_trip(pages: PageFactory, lib_servers: dict[str, str], mode: str) -> None:
    page = lib_page(pages, mode, "socketio")
    sio_connect(page, lib_servers["socketio"])
    res = page.evaluate(
        """async (text) => psWithin(20000, "ack", sio.emitWithAck("echo", text, {n: 1, list: [true, null]}, 42))""",
        UNICODE,
    )
    # emitWithAck resolves with the ack's first argument; the server acks all of them back
    assert res == UNICODE
    res = page.evaluate(
        """async () => psWithin(20000, "ack", new Promise((resolve) =>
             sio.emit("echo", "a", {n: 1, list: [true, null]}, 42, (...args) => resolve(args))))"""
    )
    assert res == ["a", {"n": 1, "list": [True, None]}, 42]
    assert page.evaluate("() => so.events") == ["connect"]
    check_sockets(page, mode)
    no_page_errors(page)


@pytest.mark.parametrize("mode", MODES)
def test_socketio_binary_byte_exact(pages: PageFactory, lib_servers: dict[str, str], mode: str) -> None:
    page = lib_page(pages, mode, "socketio")
    sio_connect(page, lib_servers["socketio"])
    payloads = [sample_bytes(256), sample_bytes(100_000)]
    res = page.evaluate(
        """async (b64s) => {
          const [a, b] = b64s.map(psBytes);
          const back = await psWithin(20000, "binary ack", new Promise((resolve) =>
            sio.emit("echo", {small: a, nested: [b.buffer]}, (x) => resolve(x))));
          const kind = (v) => Object.prototype.toString.call(v);
          return {small: psB64(new Uint8Array(back.small)), big: psB64(new Uint8Array(back.nested[0])),
                  kinds: [kind(back.small), kind(back.nested[0])]};
        }""",
        [base64.b64encode(p).decode() for p in payloads],
    )
    assert base64.b64decode(res["small"]) == payloads[0]
    assert base64.b64decode(res["big"]) == payloads[1]
    assert res["kinds"] == ["[object ArrayBuffer]", "[object ArrayBuffer]"]
    check_sockets(page, mode)
    no_page_errors(page)


@pytest.mark.parametrize("mode", MODES)
def test_socketio_burst_of_1500_emits_complete_and_in_order(
    pages: PageFactory, lib_servers: dict[str, str], mode: str
) -> None:
    page = lib_page(pages, mode, "socketio")
    sio_connect(page, lib_servers["socketio"])
    res = page.evaluate(
        """async () => {
          for (let i = 0; i < 1500; i++) sio.emit("burst", i);
          const got = await psWithin(60000, "burst-done ack", sio.emitWithAck("burst-done"));
          sio.emit("flood", 1500);
          await psUntil(60000, "1500 server emits", () => so.f.length >= 1500);
          await psSleep(100);
          return {got, f: so.f, events: so.events};
        }"""
    )
    assert res["got"] == list(range(1500))
    assert res["f"] == list(range(1500))
    assert res["events"] == ["connect"]  # no disconnect (a ping timeout) during the burst
    check_sockets(page, mode, at_least=1)
    assert len(page.evaluate("() => psLibSockets()")) == 1
    no_page_errors(page)


@pytest.mark.parametrize("mode", MODES)
def test_socketio_reconnects_after_server_drop(pages: PageFactory, lib_servers: dict[str, str], mode: str) -> None:
    page = lib_page(pages, mode, "socketio")
    sio_connect(page, lib_servers["socketio"])
    res = page.evaluate(
        """async () => {
          sio.emit("drop");
          await psUntil(30000, "reconnect", () => so.events.includes("reconnect") && sio.connected);
          await psUntil(10000, "second hello", () => so.hellos.length >= 2);
          const ack = await psWithin(20000, "ack after reconnect", sio.emitWithAck("echo", "after"));
          return {events: so.events, hellos: so.hellos, ack};
        }"""
    )
    events = res["events"]
    # a dropped connection: "transport close" as natively (not "io server disconnect", which would
    # not reconnect, nor "transport error"), then socket.io's own automatic reconnection
    assert events[:2] == ["connect", "disconnect:transport close"], events
    assert events.count("connect") == 2 and "reconnect" in events, events
    assert res["hellos"][1] > res["hellos"][0]  # a new server-side connection
    assert res["ack"] == "after"
    socks = check_sockets(page, mode, at_least=2)
    assert socks[0]["readyState"] == 3 and socks[-1]["readyState"] == 1, socks
    no_page_errors(page)


# -------------------------------------------------------------------------------------- graphql-ws

GQL_CLIENT = r"""
async (url) => {
  window.gq = {events: []};
  window.gqc = graphqlWs.createClient({
    url,
    retryAttempts: 5,
    retryWait: () => psSleep(200),
    lazyCloseTimeout: 30000,  // one connection for the whole test, not one per operation
    on: {
      connected: () => gq.events.push("connected"),
      closed: (e) => gq.events.push("closed:" + (e && e.code)),
      error: () => gq.events.push("error"),
    },
  });
}
"""

GQL_SUBSCRIBE = r"""
(query) => {
  const sub = {data: [], errors: [], done: false};
  sub.dispose = gqc.subscribe({query}, {
    next: (v) => sub.data.push(v.data || v),
    error: (e) => sub.errors.push(String(e && (e.code || e.message || e))),
    complete: () => { sub.done = true; },
  });
  return sub;
}
"""


@pytest.mark.parametrize("mode", MODES)
def test_graphql_subscription_delivers_events_in_order(
    pages: PageFactory, lib_servers: dict[str, str], mode: str
) -> None:
    page = lib_page(pages, mode, "graphql")
    page.evaluate(GQL_CLIENT, lib_servers["graphql"])
    res = page.evaluate(
        f"""async () => {{
          const hello = await psWithin(20000, "query", new Promise((resolve, reject) => {{
            let out; gqc.subscribe({{query: "{{ hello }}"}},
              {{next: (v) => {{ out = v; }}, error: reject, complete: () => resolve(out)}});
          }}));
          const sub = ({GQL_SUBSCRIBE})("subscription {{ count(to: 500) }}");
          await psUntil(60000, "subscription complete", () => sub.done || sub.errors.length);
          return {{hello, data: sub.data, errors: sub.errors, events: gq.events}};
        }}"""
    )
    assert res["hello"] == {"data": {"hello": "world"}}
    assert res["errors"] == []
    assert [d["count"] for d in res["data"]] == list(range(500))
    assert res["events"] == ["connected"]
    check_sockets(page, mode, protocol="graphql-transport-ws")
    assert len(page.evaluate("() => psLibSockets()")) == 1
    no_page_errors(page)


@pytest.mark.parametrize("mode", MODES)
def test_graphql_retries_and_resubscribes_after_server_drop(
    pages: PageFactory, lib_servers: dict[str, str], mode: str
) -> None:
    page = lib_page(pages, mode, "graphql")
    page.evaluate(GQL_CLIENT, lib_servers["graphql"])
    res = page.evaluate(
        f"""async () => {{
          const sub = ({GQL_SUBSCRIBE})("subscription {{ ticks {{ conn n }} }}");
          await psUntil(30000, "3 ticks", () => sub.data.length >= 3);
          const first = sub.data[0].ticks.conn;
          gqc.subscribe({{query: "{{ drop }}"}}, {{next() {{}}, error() {{}}, complete() {{}}}});
          await psUntil(30000, "ticks from a new connection",
            () => sub.data.filter((d) => d.ticks.conn !== first).length >= 3);
          const sockets = psLibSockets();
          sub.dispose();
          return {{data: sub.data.map((d) => d.ticks), errors: sub.errors, events: gq.events, first, sockets}};
        }}"""
    )
    assert res["errors"] == []  # the drop never reached the subscriber: graphql-ws retried
    events = res["events"]
    assert events[:2] == ["connected", "closed:1006"], events  # a drop: close 1006 (no error event)
    assert events.count("connected") == 2 and "error" not in events, events
    first = res["first"]
    before = [t["n"] for t in res["data"] if t["conn"] == first]
    after = [t["n"] for t in res["data"] if t["conn"] != first]
    assert before == list(range(len(before))) and len(before) >= 3
    assert after == list(range(len(after))) and len(after) >= 3  # resubscribed: a fresh ticks stream
    assert len({t["conn"] for t in res["data"]}) == 2
    check_sockets(page, mode, protocol="graphql-transport-ws", at_least=2)
    socks = res["sockets"]  # as they were before the subscription was disposed
    assert len(socks) == 2 and socks[0]["readyState"] == 3 and socks[1]["readyState"] == 1, socks
    no_page_errors(page)
