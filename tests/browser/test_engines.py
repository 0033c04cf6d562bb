"""The engine seam itself (engines.py): what the other suites and the network matrix rely on.

``LaunchOptions.proxy`` must send every request of the page through the proxy, loopback and
``*.localhost`` names included (browsers bypass a proxy for loopback by default): a stand-in
proxy on loopback answers every request with the request line it got, and the page shows it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from engines import ENGINES, Browser, LaunchOptions

from tests.support.loopback import LoopbackServer
from tests.support.ports import free_port

pytestmark = [pytest.mark.browser]


class EchoingProxy(LoopbackServer):
    """Answers each request with a page holding its request line (a proxy gets absolute URLs)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.lines.append(line)
            body = f"<!doctype html><title>proxied</title><p id=line>{line}</p>".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


@pytest.fixture
def proxy() -> Iterator[EchoingProxy]:
    p = EchoingProxy()
    try:
        yield p
    finally:
        p.close()


def test_the_proxy_option_carries_loopback_requests(browser: Browser, engine: str, proxy: EchoingProxy) -> None:
    # ``browser`` (the module's, without a proxy) stays open meanwhile: a second browser of the
    # same engine starts beside it, as the network matrix does.
    # Nothing listens on that port: a page that arrives came from the proxy.
    nowhere = free_port()
    urls = [f"http://127.0.0.1:{nowhere}/direct-ip", f"http://relay-one.localhost:{nowhere}/relay-name"]
    with ENGINES[engine].launch(LaunchOptions(proxy=f"127.0.0.1:{proxy.port}")) as browser:
        context = browser.new_context()
        try:
            page = context.new_page()
            for url in urls:
                page.goto(url)
                assert page.evaluate("() => document.getElementById('line').textContent") == f"GET {url} HTTP/1.1"
        finally:
            context.close()
    # The browser's own background requests (updates, settings: CONNECT to public hosts) go to the
    # proxy too, as with any proxy: the network matrix's proxies refuse non-loopback destinations.
    page_lines = [line for line in proxy.lines if line.startswith("GET http://") and "/favicon" not in line]
    assert page_lines == [f"GET {u} HTTP/1.1" for u in urls]
