"""The relay's HTTP surface as a plain ASGI app: /send, /poll, /close, /healthz, /metrics.

No framework on the hot path: one dict lookup for the route, the pure core for parsing and
encoding, and the socket table for state. Every failure becomes a typed answer.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from polysocket_core import jsonp, wire
from polysocket_core.errors import ErrorCode, PolysocketError

from .agent import NodeAgent
from .metrics import RelayMetrics
from .table import SocketTable

log = logging.getLogger("polysocket.relay")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

OK_BODY = b'{"ok":true}'
JS_HEADERS = [(b"content-type", jsonp.JS_CONTENT_TYPE), *jsonp.COMMON_HEADERS]
JSON_HEADERS = [(b"content-type", jsonp.JSON_CONTENT_TYPE), *jsonp.COMMON_HEADERS, *jsonp.CORS_HEADERS]


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


_unquote = urllib.parse.unquote


def parse_query(raw: bytes) -> dict[str, str]:
    """``wire.parse_query`` on the hot path: the same result and the same errors, without the
    generality of ``parse_qsl`` (only fields with ``%`` or ``+`` are unquoted)."""
    try:
        qs = raw.decode("ascii")
    except UnicodeDecodeError:
        raise wire.bad("query string is not valid percent-encoded UTF-8") from None
    if qs.count("&") >= wire.MAX_QUERY_FIELDS:
        return wire.parse_query(raw)  # over the field limit: its error
    params: dict[str, str] = {}
    for field in qs.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in field or "+" in field:
            try:
                name = _unquote(name.replace("+", " "), errors="strict")
                value = _unquote(value.replace("+", " "), errors="strict")
            except UnicodeDecodeError:
                raise wire.bad("query string is not valid percent-encoded UTF-8") from None
        params[name] = value
    return params


class RelayHTTP:
    def __init__(self, table: SocketTable, metrics: RelayMetrics, agent: NodeAgent | None = None) -> None:
        self.table = table
        self.metrics = metrics
        self.agent = agent
        self.max_body = table.config.max_message_bytes * 4 // 3 + 4096
        self.routes: dict[str, Callable[[Scope, Receive, dict[str, str]], Awaitable[bytes]]] = {
            "/send": self.send,
            "/poll": self.poll,
            "/close": self.close,
            "/healthz": self.healthz,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        path = scope["path"]
        if method == "OPTIONS":
            await respond(send, 204, [*jsonp.COMMON_HEADERS, *jsonp.CORS_HEADERS], b"")
            return
        if path == "/metrics" and method == "GET":
            await respond(send, 200, [(b"content-type", b"text/plain; version=0.0.4")], self.metrics.render())
            return
        cb: str | None = None
        try:
            params = parse_query(scope["query_string"])
            raw_cb = params.get("cb")
            if raw_cb is not None:
                cb = jsonp.validate_callback(raw_cb)
            handler = self.routes.get(path)
            if handler is None:
                raise PolysocketError(ErrorCode.NOT_FOUND, f"no such endpoint: {path}")
            if method != "GET" and not (method == "POST" and path == "/send"):
                raise PolysocketError(ErrorCode.METHOD_NOT_ALLOWED, f"{method} not allowed on {path}")
            body = await handler(scope, receive, params)
        except PolysocketError as exc:
            self.metrics.errors.labels(exc.code.value).inc()
            if exc.code is ErrorCode.BAD_CALLBACK:
                cb = None
            await respond(send, *jsonp.render_error(cb, exc))
            return
        except Exception:
            log.exception("internal error on %s", path)
            self.metrics.errors.labels(ErrorCode.INTERNAL.value).inc()
            await respond(send, *jsonp.render_error(
                cb, PolysocketError(ErrorCode.INTERNAL, "internal error")))
            return
        if cb is not None:
            await respond(send, 200, JS_HEADERS, b"/**/%b(%b);" % (cb.encode("ascii"), body))
        else:
            await respond(send, 200, JSON_HEADERS, body)

    async def read_body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise PolysocketError(ErrorCode.PAYLOAD_TOO_LARGE, f"body over {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise PolysocketError(ErrorCode.BAD_REQUEST, "client disconnected")
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PolysocketError(ErrorCode.PAYLOAD_TOO_LARGE, f"body over {self.max_body} bytes")
            chunks.append(chunk)
            if not event.get("more_body", False):
                return b"".join(chunks)

    async def send(self, scope: Scope, receive: Receive, params: dict[str, str]) -> bytes:
        if scope["method"] == "POST":
            body = await self.read_body(scope, receive)
            raw = any(n == b"content-type" and v.startswith(b"application/octet-stream")
                      for n, v in scope["headers"])
            p = wire.parse_send(params, body, raw_binary=raw)
        else:
            p = wire.parse_send(params)
        await self.table.get(p.socket).send(p)
        return OK_BODY

    async def poll(self, scope: Scope, receive: Receive, params: dict[str, str]) -> bytes:
        p = wire.parse_poll(params, self.table.config.max_poll_ttl_ms)
        return await self.table.get(p.socket).poll(p.ack, p.ttl_ms)

    async def close(self, scope: Scope, receive: Receive, params: dict[str, str]) -> bytes:
        p = wire.parse_close(params)
        self.table.get(p.socket).close_upstream(p.code, p.reason)
        return OK_BODY

    async def healthz(self, scope: Scope, receive: Receive, params: dict[str, str]) -> bytes:
        cfg = self.table.config
        draining = self.agent.draining if self.agent else False
        return jsonp.dumps({"ok": True, "node": cfg.node_id, "fqdn": cfg.fqdn, "sockets": len(self.table),
                            "capacity": cfg.capacity, "draining": draining})
