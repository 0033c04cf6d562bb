"""The relay's HTTP surface as a plain ASGI app: /send, /poll, /close, /healthz, /metrics.

No framework on the hot path: one dict lookup for the route, the pure core for parsing and
encoding, and the socket table for state. Every failure becomes a typed answer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Protocol

import httptools

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
PREFLIGHT_HEADERS = [*jsonp.COMMON_HEADERS, *jsonp.CORS_HEADERS]
METRICS_HEADERS = [(b"content-type", b"text/plain; version=0.0.4")]


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class Request(Protocol):
    """What a handler needs of a request besides its query parameters."""

    method: str
    headers: list[tuple[bytes, bytes]]

    async def body(self) -> bytes: ...


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
Handler = Callable[[Request, dict[str, str]], Awaitable[bytes]]  # may return the session's own coroutine


class AsgiRequest:
    __slots__ = ("headers", "http", "method", "receive")

    def __init__(self, http: RelayHTTP, scope: Scope, receive: Receive) -> None:
        self.http = http
        self.method: str = scope["method"]
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.receive = receive

    async def body(self) -> bytes:
        max_body = self.http.max_body
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > max_body:
                raise PolysocketError(ErrorCode.PAYLOAD_TOO_LARGE, f"body over {max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self.receive()
            if event["type"] == "http.disconnect":
                raise PolysocketError(ErrorCode.BAD_REQUEST, "client disconnected")
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > max_body:
                raise PolysocketError(ErrorCode.PAYLOAD_TOO_LARGE, f"body over {max_body} bytes")
            chunks.append(chunk)
            if not event.get("more_body", False):
                return b"".join(chunks)


class RelayHTTP:
    """The endpoints, independent of the server: ``answer`` turns a request into (status, headers, body).

    Served as an ASGI app (``__call__``) or, leaner, by ``RelayHTTPProtocol`` straight from the socket.
    """

    def __init__(self, table: SocketTable, metrics: RelayMetrics, agent: NodeAgent | None = None) -> None:
        self.table = table
        self.metrics = metrics
        self.agent = agent
        self.max_body = table.config.max_message_bytes * 4 // 3 + 4096
        self.routes: dict[str, Handler] = {
            "/send": self.send,
            "/poll": self.poll,
            "/close": self.close,
            "/healthz": self.healthz,
        }

    def _metrics_allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """``/metrics`` is open unless the node has a metrics token (it answers on the public port)."""
        token = self.table.config.metrics_token
        if not token:
            return True
        expected = b"bearer " + token.encode()
        return any(n == b"authorization" and hmac.compare_digest(v.lower(), expected.lower())
                   for n, v in headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, headers, body = await self.answer(scope["path"], scope["query_string"],
                                                  AsgiRequest(self, scope, receive))
        await respond(send, status, headers, body)

    async def answer(self, path: str, query: bytes, req: Request) -> Answer:
        method = req.method
        if method == "OPTIONS":
            return 204, PREFLIGHT_HEADERS, b""
        if path == "/metrics" and method == "GET":
            if not self._metrics_allowed(req.headers):
                return jsonp.render_error(None, PolysocketError(
                    ErrorCode.UNAUTHORIZED, "metrics need Authorization: Bearer <metrics token>"))
            return 200, METRICS_HEADERS, self.metrics.render()
        cb: str | None = None
        try:
            params = wire.parse_query(query)
            raw_cb = params.get("cb")
            if raw_cb is not None:
                cb = jsonp.validate_callback(raw_cb)
            handler = self.routes.get(path)
            if handler is None:
                raise PolysocketError(ErrorCode.NOT_FOUND, f"no such endpoint: {path}")
            if method != "GET" and not (method == "POST" and path == "/send"):
                raise PolysocketError(ErrorCode.METHOD_NOT_ALLOWED, f"{method} not allowed on {path}")
            body = await handler(req, params)
        except PolysocketError as exc:
            self.metrics.errors.labels(exc.code.value).inc()
            if exc.code is ErrorCode.BAD_CALLBACK:
                cb = None
            return jsonp.render_error(cb, exc)
        except Exception:
            log.exception("internal error on %s", path)
            self.metrics.errors.labels(ErrorCode.INTERNAL.value).inc()
            return jsonp.render_error(cb, PolysocketError(ErrorCode.INTERNAL, "internal error"))
        if cb is not None:
            return 200, JS_HEADERS, b"/**/%b(%b);" % (cb.encode("ascii"), body)
        return 200, JSON_HEADERS, body

    async def send(self, req: Request, params: dict[str, str]) -> bytes:
        if req.method == "POST":
            body = await req.body()
            raw = any(n == b"content-type" and v.startswith(b"application/octet-stream")
                      for n, v in req.headers)
            p = wire.parse_send(params, body, raw_binary=raw)
        else:
            p = wire.parse_send(params)
        await self.table.get(p.socket).send(p)
        return OK_BODY

    def poll(self, req: Request, params: dict[str, str]) -> Awaitable[bytes]:
        # not a coroutine itself: a waiting poll then holds one frame less (memory per idle socket)
        p = wire.parse_poll(params, self.table.config.max_poll_ttl_ms)
        return self.table.get(p.socket).poll(p.ack, p.ttl_ms)

    async def close(self, req: Request, params: dict[str, str]) -> bytes:
        p = wire.parse_close(params)
        self.table.get(p.socket).close_upstream(p.code, p.reason)
        return OK_BODY

    async def healthz(self, req: Request, params: dict[str, str]) -> bytes:
        cfg = self.table.config
        draining = self.agent.draining if self.agent else False
        return jsonp.dumps({"ok": True, "node": cfg.node_id, "fqdn": cfg.fqdn, "sockets": len(self.table),
                            "capacity": cfg.capacity, "draining": draining})


# A lean HTTP/1.1 server protocol for the relay, pluggable into uvicorn: ``uvicorn.Config(node,
# http=RelayHTTPProtocol, ...)``. uvicorn keeps the lifecycle (lifespan, signals, graceful
# shutdown, the Date/Server headers it refreshes every second); this protocol replaces its generic
# ASGI cycle on the data path: no scope or event dicts, no per-header regex checks, and one write
# per answer (status line, headers and body together) instead of two.

_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    return line


def _header_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)


_CONSTANT_BLOCKS = {id(h): _header_block(h) for h in (JS_HEADERS, JSON_HEADERS, PREFLIGHT_HEADERS, METRICS_HEADERS)}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_URL_BYTES = 128 * 1024  # JSONP clients keep URLs near 2,000 characters; curl users may send more
MAX_HEADER_BYTES = 64 * 1024
MAX_PIPELINED = 16  # complete requests waiting behind the one being answered before reading pauses
MAX_QUEUED = 256  # ... and past which (the rest of one read is still parsed) the connection is cut


class ProtocolRequest:
    __slots__ = ("body_chunks", "body_size", "expect_continue", "header_bytes", "headers", "keep_alive", "method",
                 "too_large", "url")

    def __init__(self) -> None:
        self.url = b""
        self.header_bytes = 0
        self.method = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_chunks: list[bytes] = []
        self.body_size = 0
        self.too_large = False
        self.expect_continue = False
        self.keep_alive = True

    async def body(self) -> bytes:
        if self.too_large:
            raise PolysocketError(ErrorCode.PAYLOAD_TOO_LARGE, "request body over the limit")
        return b"".join(self.body_chunks)


class RelayHTTPProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection to the relay. Requests on a connection are answered in order."""

    __slots__ = ("_defaults", "_defaults_block", "busy", "closing", "connections", "eof", "http", "idle_timer",
                 "keep_alive_timeout", "loop", "parser", "queue", "req", "server_state", "tasks", "transport",
                 "write_paused")

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any] | None = None,
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        app = config.loaded_app if getattr(config, "loaded_app", None) is not None else config.app
        while not isinstance(app, RelayHTTP):  # unwrap uvicorn's middlewares and the RelayNode
            app = getattr(app, "http", None) or getattr(app, "app", None)
            if app is None:
                raise TypeError("RelayHTTPProtocol serves a RelayNode or a RelayHTTP app")
        self.http: RelayHTTP = app
        self.loop = _loop or asyncio.get_running_loop()
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.keep_alive_timeout: float = config.timeout_keep_alive
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.req = ProtocolRequest()
        self.queue: deque[ProtocolRequest] | None = None  # requests not yet answered (pipelining; rare)
        self.busy = False
        self.closing = False  # close once the current answer is written
        self.eof = False  # the client half-closed: answer what it sent, then close
        self.write_paused = False  # the transport's write buffer is over its high-water mark
        self.idle_timer: asyncio.TimerHandle | None = None
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._defaults_block = b""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self.idle_timer = self.loop.call_later(self.keep_alive_timeout, self._idle_close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None
        self.queue = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def data_received(self, data: bytes) -> None:
        # The idle timer is not reset by data: a request must be complete within the keep-alive
        # timeout of the connection opening or the previous answer (no trickling slowloris).
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(b"upgrade not supported")
        except httptools.HttpParserError:
            self._fail(b"Invalid HTTP request received.")

    def eof_received(self) -> bool | None:
        if self.busy:
            self.eof = True
            return True  # keep the transport open to write the answers still owed
        return None

    def pause_writing(self) -> None:
        """The client is not reading its answers: stop reading requests and answering queued ones."""
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and (self.queue is None or len(self.queue) < MAX_PIPELINED):
            self.transport.resume_reading()
        self._next()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if idle, else after the answer in progress."""
        if self.busy:
            self.closing = True
        elif self.transport is not None:
            self.transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.req = ProtocolRequest()

    def on_url(self, url: bytes) -> None:
        self.req.url += url
        if len(self.req.url) > MAX_URL_BYTES:
            self._fail(b"URL too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.req.header_bytes += len(name) + len(value)
        if self.req.header_bytes > MAX_HEADER_BYTES:
            self._fail(b"request headers too large", 431)
            return
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.req.expect_continue = True
        self.req.headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self.req
        req.method = self.parser.get_method().decode("ascii")
        max_body = self.http.max_body
        for name, value in req.headers:
            if name == b"content-length" and value.isdigit() and int(value) > max_body:
                req.too_large = True
        if req.expect_continue and not req.too_large and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        req = self.req
        if req.too_large:
            return
        req.body_size += len(body)
        if req.body_size > self.http.max_body:
            req.too_large = True
            req.body_chunks = []
        else:
            req.body_chunks.append(body)

    def on_message_complete(self) -> None:
        req = self.req
        req.keep_alive = self.parser.should_keep_alive()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.busy or self.write_paused:
            if self.queue is None:
                self.queue = deque()
            if len(self.queue) >= MAX_QUEUED:
                # Pausing does not stop the parser working through what was already read: a
                # client that pipelines without reading its answers is cut off here.
                self._fail(b"too many pipelined requests", 503)
                return
            self.queue.append(req)
            if len(self.queue) == MAX_PIPELINED and self.transport is not None:
                self.transport.pause_reading()  # resumed as the queue drains
        else:
            self._start(req)

    # answering

    def _start(self, req: ProtocolRequest) -> None:
        self.busy = True
        task = self.loop.create_task(self._answer(req))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, req: ProtocolRequest) -> None:
        try:
            parsed = httptools.parse_url(req.url)
            path = parsed.path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
            status, headers, body = await self.http.answer(path, parsed.query or b"", req)
        except Exception:
            log.exception("internal error answering %r", req.url[:200])
            status, headers, body = jsonp.render_error(None, PolysocketError(ErrorCode.INTERNAL, "internal error"))
        self._write(req, status, headers, body)

    def _write(self, req: ProtocolRequest, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        transport = self.transport
        self.server_state.total_requests += 1
        if transport is None or transport.is_closing():
            self.busy = False
            return
        defaults = self.server_state.default_headers
        if defaults is not self._defaults:  # uvicorn renews them (the Date) every second
            self._defaults = defaults
            self._defaults_block = _header_block(defaults)
        block = _CONSTANT_BLOCKS.get(id(headers))
        if block is None:
            block = _header_block(headers)
        close = self.closing or not req.keep_alive or (self.eof and not self.queue)
        transport.write(b"%b%b%bcontent-length: %d\r\n%b\r\n%b" % (
            _status_line(status), self._defaults_block, block, len(body),
            b"connection: close\r\n" if close else b"", b"" if req.method == "HEAD" else body))
        self.busy = False
        if close:
            transport.close()
            return
        self._next()

    def _next(self) -> None:
        """Answer the next queued request, unless one is in progress or the client stopped reading."""
        transport = self.transport
        if self.busy or self.write_paused or transport is None or transport.is_closing():
            return
        if self.queue:
            if len(self.queue) == MAX_PIPELINED:
                transport.resume_reading()
            self._start(self.queue.popleft())
        else:
            self.idle_timer = self.loop.call_later(self.keep_alive_timeout, self._idle_close)

    def _idle_close(self) -> None:
        self.idle_timer = None
        if not self.busy and self.transport is not None:
            self.transport.close()

    def _fail(self, message: bytes, status: int = 400) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_status_line(status) + b"content-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(message), message))
            self.transport.close()
