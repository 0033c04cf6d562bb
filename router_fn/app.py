"""The router's HTTP API: ``GET /connect`` (JSONP or JSON), ``GET /healthz`` and the browser library
(``GET /client/polysocket.js``).

Stateless between requests: everything lives in Redis, so it runs as many uvicorn workers or
Lambda invocations as needed. The Redis client is created lazily (no I/O at import time).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from polysocket_core import edge, wire
from polysocket_core.control import Keys
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.redis_client import ANSWER_SOON, explain, redis_client

from .admission import Admission, ConnectContext, OpenAdmission, TokenAdmission
from .client_address import client_address
from .client_library import LIBRARY_FILES, ClientLibrary
from .establish import Establisher
from .policy import normalize_origin
from .ratelimit import RateLimiter
from .settings import RouterSettings
from .tokens import TokenStore

log = logging.getLogger("polysocket.router")


# Stands for a Referer that is not a URL with an http(s) origin: never matches an origin pattern,
# so only a token that allows "*" admits it (as with a malformed Origin header).
MALFORMED_REFERER = "(malformed Referer)"


def request_origin(request: Request) -> str | None:
    """``Origin`` when sent, else the origin of ``Referer``: script-tag GETs carry no Origin header."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return origin
    referer = request.headers.get("referer")
    if referer:
        # normalize_origin never raises (urlsplit does, e.g. on "http://[::1/x") and drops userinfo.
        return normalize_origin(referer) or MALFORMED_REFERER
    return None


class OutageLog:
    """Says once why the control plane cannot be used, not once per browser: a wrong password or an
    untrusted certificate fails every connect, and one line per connect would bury the reason."""

    def __init__(self) -> None:
        self._reason: str | None = None

    def failed(self, reason: str) -> None:
        if reason != self._reason:
            log.error("control plane unavailable: %s", reason)
            self._reason = reason

    def reached(self) -> None:
        if self._reason is not None:
            log.info("control plane reachable again")
            self._reason = None


class Router:
    """Holds the lazily created Redis client (reused by warm Lambda invocations) and the policy."""

    def __init__(self, settings: RouterSettings, admission: Admission | None = None) -> None:
        self.settings = settings
        self._admission = admission
        self.trusted_proxies = list(settings.trusted_proxies)
        self._redis: aioredis.Redis | None = None
        self._establisher: Establisher | None = None
        self._control_plane = OutageLog()

    def _connect_redis(self) -> aioredis.Redis:
        if self._redis is None:
            # A browser waits on /connect: a Redis restart is waited out briefly (D3), then no_relay.
            self._redis = redis_client(self.settings.redis_url, patience=ANSWER_SOON,
                                       ca_file=self.settings.redis_ca_file)
        return self._redis

    @property
    def establisher(self) -> Establisher:
        if self._establisher is None:
            self._establisher = Establisher(
                self._connect_redis(), Keys(self.settings.key_prefix),
                self.settings.ack_timeout_s, self.settings.establish_timeout_s,
                node_timeout_s=self.settings.node_timeout_s,
            )
        return self._establisher

    @property
    def admission(self) -> Admission:
        if self._admission is None:
            s = self.settings
            if s.admission == "open":
                self._admission = OpenAdmission()
            else:
                redis, keys = self._connect_redis(), Keys(s.key_prefix)
                self._admission = TokenAdmission(
                    TokenStore(redis, keys), RateLimiter(redis, keys, s.rate_per_ip, s.rate_per_token),
                    list(s.allow_target_cidrs),
                )
        return self._admission

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._establisher = None
            if not isinstance(self._admission, OpenAdmission):
                self._admission = None

    async def connect(self, request: Request) -> Response:
        cb: str | None = None
        try:
            params = wire.parse_query(request.scope["query_string"])
            cb = edge.callback(params)
            connect = wire.parse_connect(params)
            client_ip = client_address(request.scope, self.trusted_proxies)
            ctx = ConnectContext(client_ip=client_ip, origin=request_origin(request),
                                 user_agent=request.headers.get("user-agent", ""))
            admitted = await self.admission.admit(connect, ctx)
            est = await self.establisher.establish(connect.target, connect.protocols, connect.caller,
                                                   admitted)
        except PolysocketError as exc:
            return to_response(*edge.render_error(cb, exc))
        except RedisError as exc:
            self._control_plane.failed(explain(self.settings.redis_url, exc))
            return to_response(*edge.render_error(
                cb, PolysocketError(ErrorCode.NO_RELAY, "control plane unavailable")))
        except Exception:
            log.exception("internal error in /connect")
            return to_response(*edge.render_error(cb, PolysocketError(ErrorCode.INTERNAL, "internal error")))
        self._control_plane.reached()
        answer: dict[str, object] = {"ok": True, "fqdn": est.fqdn, "socket": est.socket, "protocol": est.protocol}
        if est.idle_ms:
            answer["idle"] = est.idle_ms  # ms without a poll after which the relay frees the socket
        return to_response(*edge.render(cb, answer))


def to_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    resp = Response(content=body, status_code=status)
    for name, value in headers:
        resp.headers[name.decode()] = value.decode()
    return resp


def request_callback(request: Request) -> str | None:
    """The request's valid ``cb`` for an error answer, else None: the error being answered matters
    more than a broken query string."""
    try:
        return edge.callback(wire.parse_query(request.scope.get("query_string", b"")))
    except PolysocketError:
        return None


def error_response(request: Request, error: PolysocketError) -> Response:
    """An error in the protocol's shape, as JSONP when the request carries a valid ``cb``."""
    return to_response(*edge.render_error(request_callback(request), error))


REFUSAL_MESSAGES = {
    ErrorCode.NOT_FOUND: "no such endpoint: {path}",
    ErrorCode.METHOD_NOT_ALLOWED: "{method} not allowed on {path}",
    ErrorCode.INTERNAL: "internal error",
}


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, wrong method) in the protocol's shape and headers; the
    code of the status is the relay's for it (``edge.code_for_status``)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = edge.code_for_status(status)
    message = REFUSAL_MESSAGES.get(code, "bad request").format(
        path=request.scope.get("path", "")[:200], method=request.method[:16])
    resp = to_response(*edge.refusal(status, message, request_callback(request)))
    allow = {k.lower(): v for k, v in (getattr(exc, "headers", None) or {}).items()}.get("allow")
    if allow:
        resp.headers["allow"] = allow
    return resp


async def _validation_error(request: Request, exc: Exception) -> Response:
    return error_response(request, PolysocketError(ErrorCode.BAD_REQUEST, "malformed request"))


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware calls this, then re-raises so the server logs the traceback.
    return error_response(request, PolysocketError(ErrorCode.INTERNAL, "internal error"))


def create_app(settings: RouterSettings | None = None, admission: Admission | None = None) -> FastAPI:
    if settings is None:  # the Lambda's case: its configuration is its environment
        settings = RouterSettings.from_env(os.environ)
    router = Router(settings, admission)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await router.close()

    app = FastAPI(title="polysocket router", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan, exception_handlers={
                      HTTPException: _http_exception,
                      RequestValidationError: _validation_error,
                      Exception: _internal_error,
                  })
    app.state.router = router

    @app.get("/connect")
    async def connect(request: Request) -> Response:
        return await router.connect(request)

    @app.options("/connect")
    async def preflight() -> Response:
        return to_response(edge.PREFLIGHT_STATUS, edge.PREFLIGHT_HEADERS, b"")

    @app.get("/healthz")
    async def healthz() -> Response:
        return to_response(*edge.render(None, {"ok": True, "service": "router"}))

    if settings.static_dir and Path(settings.static_dir).is_dir():
        # Imported here: only `polysocket dev` serves a directory, and the Lambda never pays for it.
        from starlette.staticfiles import StaticFiles

        app.mount("/client", StaticFiles(directory=settings.static_dir, html=True), name="client")
    else:
        # Everywhere else (the Lambda, a plain `polysocket router`): the library from the package,
        # where the docs say it is (router_fn/client_library.py says why).
        library = ClientLibrary()

        def serve(name: str) -> Callable[[Request], Awaitable[Response]]:
            async def client_file(request: Request) -> Response:
                file = library.get(name)
                if file.matches(request.headers.get("if-none-match")):
                    return Response(status_code=304, headers=file.headers())
                return Response(content=file.body, headers=file.headers())
            return client_file

        for name in LIBRARY_FILES:
            app.add_api_route(f"/client/{name}", serve(name), methods=["GET"], include_in_schema=False)

    return app
