"""The matrix's TLS-intercepting network on its own, without a browser (networks.py, ``squid-tls``):
what the cell relies on, shown from a plain HTTPS client, so a cell that passes cannot do so because
the proxy let TLS through untouched. Through squid with ``ssl_bump``: a tunnel to a per-socket relay
name (resolved by the LoopbackDNS) is answered with a certificate squid minted with its own CA; the
request inside reaches the origin without its ``Upgrade``; a name other than loopback is refused.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from https_site import TestCA
from networks import NETWORKS

from tests.support.ports import free_port


class _Headers(BaseHTTPRequestHandler):
    """Answers every GET with the request's headers, as JSON."""

    def do_GET(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[tuple[TestCA, int]]:
    """An HTTPS origin on loopback with a certificate from the site's CA, for any ``*.node1.localhost``."""
    ca = TestCA(tmp_path, "site")
    cert = ca.issue("origin", ["localhost", "node1.localhost", "*.node1.localhost"])
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Headers)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert.cert, cert.key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield ca, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_intercepting_proxy_decrypts_strips_the_upgrade_and_resolves_only_loopback(
        origin: tuple[TestCA, int], tmp_path: Path) -> None:
    site_ca, port = origin
    network = NETWORKS["squid-tls"]
    with network.start(tmp_path / "proxy", site_ca) as reach:
        assert reach.proxy is not None and len(reach.trusted_keys) == 1
        proxy_host, proxy_port = reach.proxy.rsplit(":", 1)
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE  # looked at below: the certificate must be squid's, not the origin's
        conn = http.client.HTTPSConnection(proxy_host, int(proxy_port), context=unverified, timeout=20)
        conn.set_tunnel(f"k7x2q.node1.localhost:{port}")
        conn.connect()
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        served = x509.load_der_x509_certificate(der)
        conn.request("GET", "/", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                          "Sec-WebSocket-Version": "13"})
        answer = conn.getresponse()
        seen = json.loads(answer.read())
        conn.close()
        assert answer.status == 200
        assert seen["host"] == f"k7x2q.node1.localhost:{port}"  # decrypted, and resolved by the LoopbackDNS
        assert "upgrade" not in seen, seen  # the WebSocket handshake does not get through
        assert served.issuer != site_ca.certificate.subject  # minted by the proxy: the browser trusts only its CA
        assert "proxy CA" in served.issuer.rfc4514_string()

        # nothing leaves the machine: squid accepts the tunnel, then answers the request inside with
        # its refusal (a bumping squid delays its errors so a browser can show them over HTTPS)
        refused = http.client.HTTPSConnection(proxy_host, int(proxy_port), context=unverified, timeout=20)
        refused.set_tunnel("example.com:443")
        refused.request("GET", "/")
        assert refused.getresponse().status == 403
        refused.close()
