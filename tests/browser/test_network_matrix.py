"""Every cell of the matrix, engine x network (issue 17, items 1, 3 and 6): a real browser behind a
real proxy (networks.py), ``auto`` mode, nothing forced.

Per cell: two sockets of a fresh page, timed (open, first echo) with the transport and receiver
they used (the figures of docs/client.md, printed here and written where ``PSTEST_MATRIX_FIGURES``
points; ``make network-table`` regenerates the table); unmodified socket.io-client and mqtt.js
after ``PolySocket.install()``; and the conformance page. Where the network lets a WebSocket
through the page uses it; elsewhere the fallback engages by itself and receives by stream where
streams pass, by polling where they are held back; every message arrives once and in order, with
the events and close codes the native WebSocket shows on the open network.

One proxy and one browser per cell, shared by the cell's tests (module fixtures); the three engines
run in their own pytest processes at once (``make pytest``). A network with ``tls`` (the
TLS-intercepting squid) has its own site, a second stack on HTTPS (https_site.py), and runs on
Chromium only (differences.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from engines import ENGINES, Browser, LaunchOptions
from https_site import TlsSite, tls_site
from networks import NETWORKS, Network
from psbrowser import BrowserStack, PageFactory
from test_conformance import DOCUMENTED_BY_ENGINE
from test_libraries import BUNDLES, HELPERS, INSTALL, MQTT_CONNECT, SIO_CONNECT, lib_servers
from test_network_verdicts import COUNT_NATIVE

from tests.support.ports import free_port

pytestmark = [pytest.mark.browser, pytest.mark.stack]

__all__ = ["lib_servers"]  # a fixture of test_libraries.py, shared


@dataclass
class Cell:
    """``stack``: the server side this cell's pages use (on HTTPS for a network with ``tls``);
    ``open_network``: how a browser reaches that site with nothing in the way (trusting its CA on
    TLS), where the native WebSocket's reference results are taken."""

    engine: str
    network: Network
    browser: Browser
    stack: BrowserStack
    open_network: LaunchOptions

    def pages(self) -> Iterator[PageFactory]:
        ctx = self.browser.new_context()
        try:
            yield PageFactory(ctx, self.stack)
        finally:
            ctx.close()

    @property
    def transport(self) -> str:
        return "websocket" if self.network.native else "xhr"


@pytest.fixture(scope="module")
def site_on_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSite]:
    """Started only for a network with ``tls``, then shared by its cells."""
    with tls_site(tmp_path_factory.mktemp("site")) as site:
        yield site


@pytest.fixture(scope="module", params=list(NETWORKS))
def cell(request: pytest.FixtureRequest, engine: str, browser_stack: BrowserStack,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    network = NETWORKS[request.param]
    missing = ENGINES[engine].missing()
    if missing:
        pytest.fail(f"{engine}: {', '.join(missing)} not installed: run `make deps`")
    site: TlsSite | None = request.getfixturevalue("site_on_tls") if network.tls else None
    with network.start(tmp_path_factory.mktemp(network.name), site.ca if site else None) as reach, \
            ENGINES[engine].launch(LaunchOptions(proxy=reach.proxy, trusted_keys=reach.trusted_keys)) as browser:
        if site is None:
            yield Cell(engine, network, browser, browser_stack, LaunchOptions())
        else:
            yield Cell(engine, network, browser, site.stack, LaunchOptions(trusted_keys=(site.ca.spki_hash,)))


@pytest.fixture
def cell_pages(cell: Cell) -> Iterator[PageFactory]:
    yield from cell.pages()


# ------------------------------------------------------------------------------------------ figures

# Opens a socket, sends one message as it opens and waits for its echo: times from new PolySocket
# (performance.now() in the page), the transport, the receiver when the echo came, the native tries.
TIMED_SOCKET = """
async ([target]) => {
  const tries = window.__nativeTries;
  const t0 = performance.now();
  const r = await psOpen(target, null, {});
  if (!r.ok) return r;
  const rec = psSocks[r.id];
  r.open_ms = performance.now() - t0;
  rec.s.send("first");
  const got = await psWait(r.id, 1, 30000);
  r.first_message_ms = performance.now() - t0;
  r.echo = got.messages.map((m) => m.d);
  r.receiver = rec.s.receiving || "websocket";
  r.skipped = rec.s._skipped;
  r.native_tries = window.__nativeTries - tries;
  return r;
}
"""



def record_figures(engine: str, network: str, sockets: list[dict[str, Any]]) -> None:
    """Prints the cell's figures, and keeps them where ``make network-table`` collects them."""
    rows = [{k: s[k] for k in ("open_ms", "first_message_ms", "transport", "receiver")} for s in sockets]
    print(f"\nfigures {engine} x {network}: " + "; ".join(
        f"socket {i + 1}: open {r['open_ms']:.0f} ms, first message {r['first_message_ms']:.0f} ms, "
        f"{r['transport']}/{r['receiver']}" for i, r in enumerate(rows)))
    out = os.environ.get("PSTEST_MATRIX_FIGURES")
    if out:
        path = Path(out) / f"{engine}.{network}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"engine": engine, "network": network, "sockets": rows}))


def test_first_and_second_socket(cell: Cell, cell_pages: PageFactory) -> None:
    page = cell_pages.open(init_script=COUNT_NATIVE)
    page.evaluate("() => sessionStorage.clear()")
    target = cell.stack.target
    first = page.evaluate(TIMED_SOCKET, [target])
    second = page.evaluate(TIMED_SOCKET, [target])
    record_figures(cell.engine, cell.network.name, [first, second])
    for s in (first, second):
        assert s["ok"] and s["echo"] == ["first"], s
        assert s["transport"] == cell.transport, s
        assert s["receiver"] == ("websocket" if cell.network.native else cell.network.receiver), s
    # the first socket tried native; on a network that refused it, the second did not try again
    assert first["native_tries"] == 1, first
    assert (second["native_tries"], second["skipped"]) == ((1, "") if cell.network.native else (0, "native")), second


# ------------------------------------------------------------------------------------------ libraries

# The library sockets' transport and receiver.
SOCKETS = """() => psLib.sockets.map((s) => ({transport: s.transport, receiver: s.receiving || "websocket",
                                              skipped: s._skipped, readyState: s.readyState}))"""


def test_socketio_and_mqtt_unmodified(cell: Cell, cell_pages: PageFactory, lib_servers: dict[str, str]) -> None:
    """socket.io-client, then mqtt.js, in one page after install(): the page's first socket learns
    what the network does, the second starts with it."""
    page = cell_pages.open(init_script="window.PS_MODE = 'auto';", after_load=INSTALL)
    page.evaluate("() => sessionStorage.clear()")
    page.add_script_tag(path=str(BUNDLES["socketio"]))
    page.add_script_tag(path=str(BUNDLES["mqtt"]))
    page.add_script_tag(content=HELPERS)
    page.evaluate(SIO_CONNECT, lib_servers["socketio"])
    sio = page.evaluate("""async () => {
        const ack = await psWithin(20000, "ack", sio.emitWithAck("echo", "héllo ✓", {n: 1}, 42));
        for (let i = 0; i < 300; i++) sio.emit("burst", i);
        const got = await psWithin(60000, "burst-done ack", sio.emitWithAck("burst-done"));
        sio.emit("flood", 300);
        await psUntil(60000, "300 server emits", () => so.f.length >= 300);
        await psSleep(100);
        return {ack, got, f: so.f, events: so.events};
    }""")
    assert sio["ack"] == "héllo ✓"
    assert sio["got"] == list(range(300)) and sio["f"] == list(range(300))  # once each, in order
    assert sio["events"] == ["connect"]
    page.evaluate(MQTT_CONNECT, lib_servers["mqtt"])
    mq = page.evaluate("""async () => {
        const granted = await mqc.subscribeAsync("ps/matrix", {qos: 1});
        mq.received = [];
        for (let i = 0; i < 50; i++) await mqc.publishAsync("ps/matrix", "m" + i, {qos: 1});
        await psUntil(30000, "50 messages", () => mq.msgs.length >= 50);
        await psSleep(100);
        return {granted, pubacks: mq.received.filter((c) => c === "puback").length,
                msgs: mq.msgs.map((m) => m.text), events: mq.events};
    }""")
    assert [g["qos"] for g in mq["granted"]] == [1]
    assert mq["pubacks"] == 50 and mq["msgs"] == [f"m{i}" for i in range(50)]
    assert mq["events"] == ["connect"]
    socks = page.evaluate(SOCKETS)
    assert len(socks) == 2, socks
    assert [s["transport"] for s in socks] == [cell.transport] * 2, socks
    if not cell.network.native:
        # Each falls back on its own (the native verdict is per target origin, and these are two);
        # the second polls from the start where the first found streams held back.
        assert [s["receiver"] for s in socks] == [cell.network.receiver] * 2, socks
    assert page.page_errors == []


# ------------------------------------------------------------------------------------------ conformance

# (engine, router) -> the conformance page's results on the open network
_NATIVE: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
_CLOSED: dict[str, str] = {}  # engine -> a ws:// URL where nothing listens, the same on every network


def closed_url(engine: str) -> str:
    """Taken once the stack runs (its processes took their ports), then kept for the engine's cells."""
    return _CLOSED.setdefault(engine, f"ws://127.0.0.1:{free_port()}/")


def conformance(pages: PageFactory, closed: str, native: bool) -> dict[str, dict[str, Any]]:
    """The conformance page's results by check; ``native=False``: PolySocket's side only."""
    stack = pages.stack
    page = pages.context.new_page()
    query = {"router": stack.router, "token": stack.token, "target": stack.targets["websockets"],
             "closed": closed, "transport": "auto", **({} if native else {"native": "skip"})}
    page.goto(f"{stack.router}/client/conformance.html?{urlencode(query)}")
    page.wait_for_function("window.conformance && window.conformance.done", timeout=300_000)
    result: dict[str, Any] = page.evaluate("window.conformance")
    page.close()
    return {r["name"]: r for r in result["results"]}


def native_reference(engine: str, stack: BrowserStack, open_network: LaunchOptions) -> dict[str, dict[str, Any]]:
    """The native WebSocket's results for this site on the open network (the direct cell's, or a
    run of its own): on the site's own scheme, as URLs and origins show in the results."""
    key = (engine, stack.router)
    if key not in _NATIVE:
        with ENGINES[engine].launch(open_network) as browser:
            ctx = browser.new_context()
            try:
                _NATIVE[key] = conformance(PageFactory(ctx, stack), closed_url(engine), native=True)
            finally:
                ctx.close()
    return _NATIVE[key]


@pytest.mark.timeout(300)
def test_conformance_page(cell: Cell, cell_pages: PageFactory) -> None:
    """PolySocket in ``auto`` on this network against the native WebSocket on the open network:
    the same, except where docs/client.md documents a difference for the engine."""
    results = conformance(cell_pages, closed_url(cell.engine), native=cell.network.native)
    if cell.network.native:
        _NATIVE[(cell.engine, cell.stack.router)] = results
    native = native_reference(cell.engine, cell.stack, cell.open_network)
    assert len(results) >= 20 and set(results) == set(native)
    documented = DOCUMENTED_BY_ENGINE[cell.engine]
    bad = {name: {"native (open network)": native[name]["native"], "poly": r["poly"]}
           for name, r in results.items()
           if r["poly"] != native[name]["native"] and name not in documented}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
    # not vacuous: a drop after open is a close 1006 alone, a refused target an error then 1006
    assert [e["type"] for e in results["drop after open: close 1006 alone"]["poly"]] == ["open", "close"]
    assert [e["type"] for e in results["connect refused: error, then close 1006"]["poly"]] == ["error", "close"]
    if cell.network.native:
        # the page's own verdicts: the same as on the open network, where native and PolySocket are side by side
        assert {n for n, r in results.items() if r["verdict"] == "documented"} <= documented
