#!/opt/polysocket/bin/python
"""The relay image's health check (``polysocket-relay-healthcheck``): exit 0 when the relay in this
container answers ``GET /healthz`` with ``{"ok": true}`` within 3 s, else 1.

It asks 127.0.0.1 on ``POLYSOCKET_PORT`` (the image's default 8080), over HTTPS when the relay has a
certificate: a file (``POLYSOCKET_SSL_CERTFILE``) or its slot's, from ACME
(``POLYSOCKET_ACME_DIRECTORY``, as infra/ deploys it). Not verified: the certificate names the
relay's public name, not the loopback address. A draining relay still answers ok: it must not be replaced while
it finishes its sockets. Stdlib only (the slim image has no curl).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("POLYSOCKET_PORT", "8080")
    tls = bool(os.environ.get("POLYSOCKET_SSL_CERTFILE") or os.environ.get("POLYSOCKET_ACME_DIRECTORY"))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz"
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=3) as r:
            ok = r.status == 200 and json.loads(r.read()).get("ok") is True
    except (OSError, ValueError) as e:
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
