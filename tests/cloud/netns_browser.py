"""Chromium in a network namespace of its own whose resolver is the Route 53 DNS server.

Run as ``unshare --net --mount -- python netns_browser.py CONFIG.json`` (root). Inside the new
namespace only an empty loopback exists, so this script first makes it look like the host for
exactly what the browser needs, then drives Chromium with Playwright (sync API: this is its own
process, so it never meets the pytest process's asyncio tests) and prints one JSON line with what
the page saw.

- ``lo`` up; ``/etc/resolv.conf`` bind-mounted (private mount namespace) to ``nameserver
  127.0.0.1`` with ``options no-aaaa``.
- ``127.0.0.1:53`` (UDP and TCP) inside forwards to the DNS server on the host's loopback, and
  every TCP port in ``config["ports"]`` (router, relays) inside forwards to the same port on the
  host's loopback. The host side of each forward is a socket created by a thread that has joined
  the host's network namespace with ``setns(2)`` (a per-thread operation; a socket keeps the
  namespace it was made in), so nothing but loopback is ever reached and no veth is needed.

So the browser resolves ``{uniq}.{slot}.relay.…`` through the zone's A records (127.0.0.1) as a
production browser resolves them through Route 53, and connects to "127.0.0.1:{port}", which is
the relay.

Config: ``work_dir`` (where ``resolv.conf`` is written), ``host_netns`` (path of the host's
``/proc/PID/ns/net``), ``dns_port``, ``ports``, ``chromium``, ``chromium_args``, ``page`` (an HTTPS
URL of a resource on the router's origin), ``router``, ``token``, ``target``, ``text``,
``binary_b64``.

The host side (:func:`run_browser`, :func:`spki_hash`, the Chromium command line) is here too, so every
test and ``make cloud`` (``emulated_cloud.py``) start the browser the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("PSTEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def join_netns(fd: int) -> None:
    """Move the calling thread (only it) into the network namespace ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def pump(src: socket.socket, dst: socket.socket) -> None:
    """src -> dst until src's end: then half-close dst (a failure closes both ways)."""
    how = socket.SHUT_WR
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        how = socket.SHUT_RDWR
    with contextlib.suppress(OSError):
        dst.shutdown(how)
    if how == socket.SHUT_RDWR:
        with contextlib.suppress(OSError):
            src.shutdown(how)


def forward_tcp(listener: socket.socket, host_fd: int, port: int) -> None:
    def handle(inside: socket.socket) -> None:
        join_netns(host_fd)
        try:
            outside = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            inside.close()
            return
        outside.settimeout(None)
        threading.Thread(target=pump, args=(outside, inside), daemon=True).start()
        pump(inside, outside)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def forward_udp(inside: socket.socket, host_fd: int, port: int) -> None:
    def answer(query: bytes, peer: Any) -> None:
        join_netns(host_fd)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            out.settimeout(5)
            out.sendto(query, ("127.0.0.1", port))
            try:
                reply, _ = out.recvfrom(65536)
            except OSError:
                return
        inside.sendto(reply, peer)

    while True:
        query, peer = inside.recvfrom(65536)
        threading.Thread(target=answer, args=(query, peer), daemon=True).start()


def listen_tcp(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    return s


def setup(config: dict[str, Any]) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = Path(config["work_dir"]) / "resolv.conf"  # the test's temporary directory
    resolv.write_text("nameserver 127.0.0.1\noptions no-aaaa timeout:2 attempts:2\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)
    host_fd = os.open(config["host_netns"], os.O_RDONLY)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 53))
    threading.Thread(target=forward_udp, args=(udp, host_fd, config["dns_port"]), daemon=True).start()
    threading.Thread(target=forward_tcp, args=(listen_tcp(53), host_fd, config["dns_port"]), daemon=True).start()
    for port in config["ports"]:
        threading.Thread(target=forward_tcp, args=(listen_tcp(port), host_fd, port), daemon=True).start()


# In the page: open a PolySocket (WebSocket deleted: XHR), echo one text and one binary message.
ECHO = r"""
async ([router, token, target, text, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const s = new PolySocket(target, {router: router, token: token});
  s.binaryType = "arraybuffer";
  const got = [];
  const events = [];
  const done = new Promise((resolve) => {
    s.onmessage = (e) => {
      if (typeof e.data === "string") got.push({t: "text", d: e.data});
      else {
        const u = new Uint8Array(e.data);
        let bin = "";
        for (let i = 0; i < u.length; i++) bin += String.fromCharCode(u[i]);
        got.push({t: "binary", d: btoa(bin)});
      }
      if (got.length === 2) resolve();
    };
    s.onclose = (e) => { events.push({type: "close", code: e.code, reason: e.reason}); resolve(); };
    s.onerror = () => events.push({type: "error"});
    setTimeout(resolve, 60000);
  });
  await new Promise((resolve) => {
    s.onopen = () => { events.push({type: "open"}); resolve(); };
    setTimeout(resolve, 60000);
  });
  if (s.readyState === 1) { s.send(text); s.send(bytes.buffer); }
  await done;
  const transport = s.transport;
  const closed = new Promise((resolve) => { s.onclose = resolve; setTimeout(resolve, 10000); });
  s.close(1000, "done");
  await closed;
  // A resource entry is written when its answer ends: the echo can arrive (on the stream) before
  // the answer to its /send, so wait (bounded) for the relay's entries instead of racing them.
  const relayEntries = () => performance.getEntriesByType("resource")
    .filter((e) => new URL(e.name).host !== location.host);
  for (let i = 0; i < 100 && relayEntries().length === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {transport: transport, messages: got, events: events,
          resources: performance.getEntriesByType("resource").map((e) => e.name)};
}
"""


def browse(config: dict[str, Any]) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=config["chromium"], args=config["chromium_args"],
                                     headless=True)
        try:
            context = browser.new_context()
            context.set_default_timeout(90_000)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.add_init_script("delete window.WebSocket; delete window.MozWebSocket;")
            response = page.goto(config["page"])
            page_status = response.status if response else 0
            page.add_script_tag(url="/client/polysocket.js")
            result: dict[str, Any] = page.evaluate(ECHO, [config["router"], config["token"], config["target"],
                                                          config["text"], config["binary_b64"]])
            result["page_status"] = page_status
            result["page_url"] = page.url
            result["websocket_deleted"] = page.evaluate("typeof window.WebSocket === 'undefined'")
            result["page_errors"] = errors
            return result
        finally:
            browser.close()


# --- the host side ------------------------------------------------------------------------------------------

def spki_hash(pem: str) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the first certificate in ``pem``: Chromium's pin format."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(pem.encode())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def run_browser(config: dict[str, Any], work: Path, timeout_s: float = 150) -> dict[str, Any]:
    """This script in a new network and mount namespace; its JSON answer."""
    path = work / "browser.json"
    path.write_text(json.dumps(config))
    out = subprocess.run(["unshare", "--net", "--mount", "--", sys.executable, str(Path(__file__).resolve()),
                          str(path)], capture_output=True, timeout=timeout_s, cwd=work, stdin=subprocess.DEVNULL)
    stderr = out.stderr.decode(errors="replace")[-3000:]
    assert out.returncode == 0, f"browser exited {out.returncode}:\n{stderr}"
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def main() -> int:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    setup(config)
    print(json.dumps(browse(config)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
