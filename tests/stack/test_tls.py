"""A relay serving HTTPS (what a page served over HTTPS needs: browsers block mixed content),
with a certificate for its name and every subdomain, made by a throwaway test CA."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from polysocket_cli.processes import Stack, free_port
from tests.support.wire_client import connect

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str, str, ssl.SSLContext]]:
    ca = trustme.CA()
    cert = ca.issue_cert("node1.localhost", "*.node1.localhost", "127.0.0.1")
    tmp: Path = tmp_path_factory.mktemp("tls")
    chain, key = tmp / "chain.pem", tmp / "key.pem"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    s = Stack()
    try:
        s.start_valkey()
        port = free_port()
        s._spawn("relay-tls", [*s._cli(), "relay", "--port", str(port), "--redis-url", s.redis_url,
                               "--fqdn", f"node1.localhost:{port}", "--node-id", "node1",
                               "--ssl-certfile", str(chain), "--ssl-keyfile", str(key)], port)
        router = s.start_router()
        echo = s.start_echo()
        yield s, f"http://127.0.0.1:{router.port}", f"ws://127.0.0.1:{echo.port}/", client_ctx
    finally:
        s.stop()


async def test_send_and_poll_over_https(tls_stack: tuple[Stack, str, str, ssl.SSLContext]) -> None:
    stack, router, echo, ctx = tls_stack
    async with httpx.AsyncClient(timeout=30) as plain, httpx.AsyncClient(verify=ctx, timeout=30) as secure:
        # the relay registered during its startup, before its port opened
        c = await connect(plain, router, echo, token=stack.create_token())
        port = c.fqdn.rsplit(":", 1)[1]
        base = f"https://127.0.0.1:{port}"
        headers = {"host": c.fqdn}
        sent = await secure.get(f"{base}/send", params={"socket": c.socket, "seq": 0, "d": "über TLS"},
                                headers=headers)
        assert sent.json() == {"ok": True}
        polled = await secure.get(f"{base}/poll", params={"socket": c.socket, "ttl": 5000, "cb": "cb"},
                                  headers=headers)
        assert polled.headers["content-type"] == "application/javascript; charset=utf-8"
        assert '"data":"über TLS"' in polled.text
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets nowhere
            await plain.get(f"http://127.0.0.1:{port}/healthz")
