"""Shared pieces of the browser tests: the in-page harness and the page factory (any engine)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from engines import BrowserContext, BrowserPage

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
LIBRARY_PATH = "/client/polysocket.js"

# Test harness loaded into the page after polysocket.js. Modern JS: it only runs in the test browser.
HARNESS = r"""
window.psSocks = [];
function psB64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
function psBytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
async function psConvert(data) {
  if (typeof data === "string") return {t: "text", d: data};
  if (typeof Blob !== "undefined" && data instanceof Blob) {
    return {t: "blob", d: psB64(new Uint8Array(await data.arrayBuffer()))};
  }
  if (data instanceof ArrayBuffer) return {t: "arraybuffer", d: psB64(new Uint8Array(data))};
  return {t: "other", d: String(data)};
}
// Opens a PolySocket; resolves {id, ok, transport, protocol, events} on open or on close.
window.psOpen = function (target, protocols, options, binaryType) {
  return new Promise((resolve) => {
    const opts = Object.assign({router: window.PS_ROUTER, token: window.PS_TOKEN}, options || {});
    const s = protocols ? new PolySocket(target, protocols, opts) : new PolySocket(target, opts);
    const rec = {s, events: [], messages: [], pending: 0, waiters: []};
    const id = psSocks.push(rec) - 1;
    if (binaryType) s.binaryType = binaryType;
    const wake = () => { const w = rec.waiters; rec.waiters = []; w.forEach((f) => f()); };
    s.onopen = () => {
      rec.events.push({type: "open", transport: s.transport, protocol: s.protocol, readyState: s.readyState});
      resolve({id, ok: true, transport: s.transport, protocol: s.protocol, events: rec.events});
      wake();
    };
    s.onerror = (e) => { rec.events.push({type: "error", readyState: s.readyState}); wake(); };
    s.onclose = (e) => {
      rec.closedAt = performance.now();
      rec.events.push({type: "close", code: e.code, reason: e.reason, wasClean: e.wasClean,
                       readyState: s.readyState});
      resolve({id, ok: false, transport: s.transport, events: rec.events});
      wake();
    };
    s.onmessage = (e) => {
      const i = rec.messages.length;
      rec.messages.push(null);
      rec.pending++;
      psConvert(e.data).then((v) => { rec.messages[i] = v; rec.pending--; wake(); });
    };
  });
};
// Waits until socket id has received n messages (or closed); resolves the messages so far.
window.psWait = function (id, n, timeoutMs) {
  const rec = psSocks[id];
  return new Promise((resolve) => {
    const deadline = Date.now() + (timeoutMs || 20000);
    const check = () => {
      const closed = rec.events.some((e) => e.type === "close");
      if ((rec.messages.length >= n && rec.pending === 0) || closed || Date.now() > deadline) {
        resolve({messages: rec.messages, events: rec.events, readyState: rec.s.readyState});
        return true;
      }
      return false;
    };
    if (check()) return;
    rec.waiters.push(function again() { if (!check()) rec.waiters.push(again); });
    setTimeout(() => { check(); }, (timeoutMs || 20000) + 10);
  });
};
window.psWaitClose = function (id, timeoutMs) {
  return psWait(id, Infinity, timeoutMs || 20000);
};
"""


@dataclass(frozen=True)
class BrowserStack:
    """What the browser tests need from the server side."""

    router: str  # as the browser sees it, e.g. http://localhost:8100
    targets: dict[str, str]  # name -> ws:// URL of an echo target
    token: str = ""

    @property
    def target(self) -> str:
        return next(iter(self.targets.values()))


def browser_url(url: str) -> str:
    """The router as the page reaches it: 127.0.0.1 -> localhost (same loopback, *.localhost works)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if host in ("127.0.0.1", "::1"):
        host = "localhost"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, "", "", "")).rstrip("/")


class PageFactory:
    """Opens the test page on the router's origin, with or without native WebSocket."""

    def __init__(self, context: BrowserContext, stack: BrowserStack) -> None:
        self.context = context
        self.stack = stack

    def open(
        self,
        native: bool = True,
        init_script: str = "",
        library: str = LIBRARY_PATH,
        after_load: str = "",
        page: BrowserPage | None = None,
    ) -> BrowserPage:
        """A page with the library loaded. ``init_script`` runs before anything on the page,
        ``after_load`` (a script) right after the library. ``page``: a new page to load it into
        (one the test set watching first), else a new one."""
        return self._open(page or self.context.new_page(), native, init_script, library, after_load)

    def open_watched(
        self, native: bool = True, init_script: str = ""
    ) -> tuple[BrowserPage, Callable[[], list[tuple[str, str]]]]:
        """As ``open``, and the page's requests are recorded from the start: (page, reader)."""
        page = self.context.new_page()
        read = page.watch_requests()
        return self._open(page, native, init_script, LIBRARY_PATH, ""), read

    def _open(self, page: BrowserPage, native: bool, init_script: str, library: str, after_load: str) -> BrowserPage:
        prelude = ""
        if not native:
            prelude = "delete window.WebSocket; delete window.MozWebSocket;"
        if prelude or init_script:
            page.add_init_script(prelude + init_script)
        # A real resource of the router's origin: a page made up by page.route() would count as a
        # public address space for Chrome's local network access checks, and ws://127.0.0.1 fails.
        page.goto(self.stack.router + LIBRARY_PATH)
        page.evaluate(
            "([router, token]) => { window.PS_ROUTER = router; window.PS_TOKEN = token || null; }",
            [self.stack.router, self.stack.token],
        )
        page.add_script_tag(url=library)
        if after_load:
            page.add_script_tag(content=after_load)
        page.add_script_tag(content=HARNESS)
        # Sockets made without options still reach the test stack's router with its token.
        page.evaluate("() => { PolySocket.defaults.router = PS_ROUTER; PolySocket.defaults.token = PS_TOKEN; }")
        page.wait_for_function("typeof PolySocket === 'function' && typeof psOpen === 'function'")
        return page
