"""A stand-in for the EC2 instance metadata service (IMDSv2) and the ECS task metadata endpoint.

The real services live at link-local addresses on AWS hosts and cannot run here; this imitates the
parts the relay uses, on 127.0.0.1, with IMDSv2's rules: ``PUT /latest/api/token`` with a TTL header
returns a token, and metadata GETs without that token are refused with 401 (so an IMDSv1-style
client fails, as it would with ``http_tokens = required``).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from polysocket_cli.processes import free_port


class MetadataStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, metadata: dict[str, str], ecs_task: dict[str, Any] | None = None) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.metadata = metadata
        self.ecs_task = ecs_task
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, had a valid token)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: MetadataStandIn

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: str, ctype: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        self.server.requests.append(("PUT", self.path, False))
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if self.path != "/latest/api/token" or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self._send(400, "bad token request")
            return
        token = secrets.token_urlsafe(16)
        self.server.tokens.add(token)
        self._send(200, token)

    def do_GET(self) -> None:
        if self.path == "/ecs/task" and self.server.ecs_task is not None:
            self.server.requests.append(("GET", self.path, True))
            self._send(200, json.dumps(self.server.ecs_task), "application/json")
            return
        ok = self.headers.get("X-aws-ec2-metadata-token", "") in self.server.tokens
        self.server.requests.append(("GET", self.path, ok))
        if not ok:
            self._send(401, "")
            return
        prefix = "/latest/meta-data/"
        key = self.path[len(prefix):] if self.path.startswith(prefix) else None
        if key is None or key not in self.server.metadata:
            self._send(404, "")
            return
        self._send(200, self.server.metadata[key])


@contextmanager
def metadata_standin(metadata: dict[str, str], ecs_task: dict[str, Any] | None = None) -> Iterator[MetadataStandIn]:
    server = MetadataStandIn(metadata, ecs_task)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
