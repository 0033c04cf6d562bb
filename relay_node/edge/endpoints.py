"""The relay's endpoints: /send, /poll, /stream, /close, /healthz, /metrics, behind one ``answer`` seam.

``RelayEndpoints.answer(path, query, request)`` turns a request into (status, headers, body) and
knows nothing of HTTP framing: ``relay_node.edge.http1`` serves it, tests can call it
directly. A ``/stream`` answer's body is a ``SocketStream`` (``relay_node.sockets.stream``), which the HTTP
layer starts once the headers are out. No framework on the hot path: one dict lookup for the route,
the pure core for parsing and encoding, and the socket table for state. Every failure becomes a typed answer.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from polysocket_core import edge, wire
from polysocket_core.errors import ErrorCode, PolysocketError

from ..metrics import RelayMetrics
from ..settings import RelayConfig
from ..sockets.receivers import Carrier
from ..sockets.stream import SocketStream, open_stream
from ..sockets.table import SocketTable
from .logsafe import describe_target, log_internal

log = logging.getLogger("polysocket.relay")

OK_BODY = b'{"ok":true}'
METRICS_HEADERS = [(b"content-type", b"text/plain; version=0.0.4")]
STREAM_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), *edge.COMMON_HEADERS,
                  (b"x-accel-buffering", b"no"), *edge.CORS_HEADERS]  # no-store is among the common ones
CONSTANT_HEADERS = (*edge.CONSTANT_HEADERS, METRICS_HEADERS, STREAM_HEADERS)  # formatted once


class Request(Protocol):
    """What a handler needs of a request besides its query parameters."""

    method: str
    headers: list[tuple[bytes, bytes]]

    @property
    def carrier(self) -> Carrier | None:
        """The connection the answer goes out on (a poll takes its socket over on it)."""
        ...

    async def body(self) -> bytes: ...


Answer = tuple[int, list[tuple[bytes, bytes]], bytes | SocketStream]
AnswerFn = Callable[[str, bytes, Request], Awaitable[Answer]]  # what the HTTP/1.1 protocol serves
# may return the session's own coroutine; only /stream's body is not bytes, None is ``{"ok":true}``
Handler = Callable[[Request, dict[str, str]], Awaitable[bytes | SocketStream | None]]


def _not_draining() -> bool:
    return False


class RelayEndpoints:
    """The endpoints, independent of the server: ``answer`` turns a request into (status, headers, body).

    ``draining`` and ``fqdn`` are asked of the node when ``/healthz`` answers: whether it drains
    (the control plane decides) and the name it runs under (a slot's, decided when it started)."""

    def __init__(self, settings: RelayConfig, table: SocketTable, metrics: RelayMetrics,
                 draining: Callable[[], bool] = _not_draining, fqdn: Callable[[], str] | None = None) -> None:
        self.settings = settings
        self.table = table
        self.metrics = metrics
        self.draining = draining
        self.fqdn = fqdn or (lambda: settings.fqdn)
        # a base64-encoded message of the largest size plus its parameters
        self.max_body = settings.max_message_bytes * 4 // 3 + 4096
        self.routes: dict[str, Handler] = {
            "/send": self.send,
            "/poll": self.poll,
            "/stream": self.stream,
            "/close": self.close,
            "/healthz": self.healthz,
        }
        self.known_paths = frozenset([*self.routes, "/metrics"])

    def _metrics_allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """``/metrics`` is open unless the node has a metrics token (it answers on the public port)."""
        token = self.settings.metrics_token
        if not token:
            return True
        expected = b"bearer " + token.encode()
        return any(n == b"authorization" and hmac.compare_digest(v.lower(), expected.lower())
                   for n, v in headers)

    async def answer(self, path: str, query: bytes, req: Request) -> Answer:
        """The seam: ``path`` is decoded, ``query`` raw; never raises (an unexpected error is a 500)."""
        method = req.method
        if method == "OPTIONS":
            return edge.PREFLIGHT_STATUS, edge.PREFLIGHT_HEADERS, b""
        if path == "/metrics" and method == "GET":
            if not self._metrics_allowed(req.headers):
                return edge.render_error(None, PolysocketError(
                    ErrorCode.UNAUTHORIZED, "metrics need Authorization: Bearer <metrics token>"))
            return 200, METRICS_HEADERS, self.metrics.render()
        cb: str | None = None
        try:
            params = wire.parse_query(query)
            cb = edge.callback(params)
            handler = self.routes.get(path)
            if handler is None:
                raise PolysocketError(ErrorCode.NOT_FOUND, f"no such endpoint: {path[:100]}")
            if method != "GET" and not (method == "POST" and path == "/send"):
                raise PolysocketError(ErrorCode.METHOD_NOT_ALLOWED, f"{method[:20]} not allowed on {path}")
            pending = handler(req, params)
            del params  # a waiting poll need not keep the parsed query (memory per idle socket)
            body = await pending
        except PolysocketError as exc:
            self.metrics.errors.labels(exc.code.value).inc()
            if path == "/stream":
                cb = None  # a stream's errors are JSON: it has no JSONP form
            return edge.render_error(cb, exc)
        except Exception as failed:  # its own name: mypyc types a name shared by clauses as the first's
            log_internal(log, describe_target(path, self.known_paths), failed)
            self.metrics.errors.labels(ErrorCode.INTERNAL.value).inc()
            return edge.render_error(cb, PolysocketError(ErrorCode.INTERNAL, "internal error"))
        if body is None:  # the work had no result: done
            body = OK_BODY
        elif not isinstance(body, bytes):  # a /stream answer: the HTTP layer starts it
            return 200, STREAM_HEADERS, body
        return edge.answer(cb, body)

    def send(self, req: Request, params: dict[str, str]) -> Awaitable[None]:
        # perf: send-no-coroutine: a GET /send (nearly every send) answers with the socket's own
        # coroutine, not one of its own awaiting it (one coroutine frame less per message)
        if "batch" in params or req.method == "POST":
            return self._send_with_body(req, params)
        p = wire.parse_send(params)
        return self.table.get(p.socket).send(p)

    async def _send_with_body(self, req: Request, params: dict[str, str]) -> None:
        """A batch of sends, or a send whose message is the request's body (both read it first)."""
        if "batch" in params:  # several frames in one request, accepted in order
            frames = wire.parse_send_batch(params, await req.body() if req.method == "POST" else None)
            sock = self.table.get(frames[0].socket)
            for frame in frames:
                await sock.send(frame)
            return
        body = await req.body()
        raw = any(n == b"content-type" and v.startswith(b"application/octet-stream")
                  for n, v in req.headers)
        p = wire.parse_send(params, body, raw_binary=raw)
        await self.table.get(p.socket).send(p)

    def poll(self, req: Request, params: dict[str, str]) -> Awaitable[bytes]:
        # not a coroutine itself: a waiting poll then holds one frame less (memory per idle socket)
        p = wire.parse_poll(params, self.settings.max_poll_ttl_ms)
        req.headers = []  # perf: poll-sheds-request (nor its headers: a browser's are ~1 KiB)
        return self.table.get(p.socket).poll(p.ack, p.ttl_ms, req.carrier)

    async def stream(self, req: Request, params: dict[str, str]) -> SocketStream:
        """Validated, acked and ready here; it starts (and takes over as the socket's receiver)
        when the HTTP layer has written the headers, with no await in between."""
        last_event_id = None
        for name, value in req.headers:
            if name == b"last-event-id":
                last_event_id = value.strip()
        p = wire.parse_stream(params, self.settings.max_poll_ttl_ms, last_event_id)
        return open_stream(self.table.get(p.socket), p)

    async def close(self, req: Request, params: dict[str, str]) -> None:
        p = wire.parse_close(params)
        self.table.get(p.socket).close_upstream(p.code, p.reason)

    async def healthz(self, req: Request, params: dict[str, str]) -> bytes:
        cfg = self.settings
        return edge.dumps({"ok": True, "node": cfg.node_id, "fqdn": self.fqdn(), "sockets": len(self.table),
                          "capacity": cfg.capacity, "draining": self.draining()})
