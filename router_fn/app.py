"""The router's front door: a plain ASGI app that answers the hot path itself — ``GET /connect``
(JSONP or JSON), its ``OPTIONS`` preflight and ``GET /healthz`` — and hands every other request to
the FastAPI app of ``router_fn.rest``, built on the first such request.

Why not FastAPI for everything: its routing, middleware stack and Request/Response objects were a
third of the router's CPU per connect, and its import (with pydantic) most of the Lambda
handler's cold start; a connect needs neither (bench/PERF_LEDGER.md, ``asgi-front-door``).

Stateless between requests: everything lives in Redis, so it runs as many uvicorn workers or
Lambda invocations as needed. The Redis client is created lazily (no I/O at import time).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from polysocket_core import edge, wire
from polysocket_core.control import Keys
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.redis_client import ANSWER_SOON, explain, redis_client
from polysocket_redis.pipelines import Pipelines, pipelines_for

from .admission import Admission, ConnectContext, OpenAdmission, TokenAdmission
from .client_address import client_address
from .establish import Establisher
from .policy import normalize_origin
from .ratelimit import RateLimiter
from .settings import RouterSettings
from .tokens import TokenStore

if TYPE_CHECKING:
    from fastapi import FastAPI

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]

log = logging.getLogger("polysocket.router")


# Stands for a Referer that is not a URL with an http(s) origin: never matches an origin pattern,
# so only a token that allows "*" admits it (as with a malformed Origin header).
MALFORMED_REFERER = "(malformed Referer)"


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """The first value of header ``name`` (lower case, as ASGI servers give every name), as
    Starlette's ``Headers.get`` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def request_origin(scope: Mapping[str, Any]) -> str | None:
    """``Origin`` when sent, else the origin of ``Referer``: script-tag GETs carry no Origin header."""
    origin = header(scope, b"origin")
    if origin and origin != "null":
        return origin
    referer = header(scope, b"referer")
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
        self._pipelines: Pipelines | None = None
        self._establisher: Establisher | None = None
        self._control_plane = OutageLog()

    def _connect_redis(self) -> aioredis.Redis:
        if self._redis is None:
            # A browser waits on /connect: a Redis restart is waited out briefly (D3), then no_relay.
            self._redis = redis_client(self.settings.redis_url, patience=ANSWER_SOON,
                                       ca_file=self.settings.redis_ca_file)
        return self._redis

    def _connect_pipelines(self) -> Pipelines:
        """The connect path's two round trips, on the router's own connections where the URL allows
        (polysocket_redis.pipelines)."""
        if self._pipelines is None:
            self._pipelines = pipelines_for(self.settings.redis_url, self._connect_redis(), patience=ANSWER_SOON,
                                            ca_file=self.settings.redis_ca_file, spare=True)
        return self._pipelines

    @property
    def establisher(self) -> Establisher:
        if self._establisher is None:
            self._establisher = Establisher(
                self._connect_redis(), Keys(self.settings.key_prefix),
                self.settings.ack_timeout_s, self.settings.establish_timeout_s,
                node_timeout_s=self.settings.node_timeout_s, pipelines=self._connect_pipelines(),
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
                    list(s.allow_target_cidrs), pipelines=self._connect_pipelines(),
                )
        return self._admission

    async def close(self) -> None:
        if self._pipelines is not None:
            await self._pipelines.aclose()
            self._pipelines = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._establisher = None
            if not isinstance(self._admission, OpenAdmission):
                self._admission = None

    async def connect(self, scope: Mapping[str, Any]) -> Answer:
        """The answer to ``GET /connect``: every failure is a typed error in the protocol's shape."""
        cb: str | None = None
        try:
            params = wire.parse_query(scope["query_string"])
            cb = edge.callback(params)
            connect = wire.parse_connect(params)
            client_ip = client_address(scope, self.trusted_proxies)
            ctx = ConnectContext(client_ip=client_ip, origin=request_origin(scope),
                                 user_agent=header(scope, b"user-agent") or "")
            admitted = await self.admission.admit(connect, ctx)
            est = await self.establisher.establish(connect.target, connect.protocols, connect.caller,
                                                   admitted)
        except PolysocketError as exc:
            return edge.render_error(cb, exc)
        except RedisError as exc:
            self._control_plane.failed(explain(self.settings.redis_url, exc))
            return edge.render_error(cb, PolysocketError(ErrorCode.NO_RELAY, "control plane unavailable"))
        except Exception:
            log.exception("internal error in /connect")
            return edge.render_error(cb, PolysocketError(ErrorCode.INTERNAL, "internal error"))
        self._control_plane.reached()
        answer: dict[str, object] = {"ok": True, "fqdn": est.fqdn, "socket": est.socket, "protocol": est.protocol}
        if est.idle_ms:
            answer["idle"] = est.idle_ms  # ms without a poll after which the relay frees the socket
        return edge.render(cb, answer)

    def health(self) -> Answer:
        return edge.render(None, {"ok": True, "service": "router"})


async def send_answer(send: Send, answer: Answer) -> None:
    """The answer as ASGI messages, with the headers Starlette's ``Response`` would add (a
    ``content-length``, none on a 204)."""
    status, headers, body = answer
    head = headers if status == 204 else [(b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


PREFLIGHT: Answer = (edge.PREFLIGHT_STATUS, edge.PREFLIGHT_HEADERS, b"")


class RouterApp:
    """The ASGI app ``create_app`` returns (uvicorn and Mangum run it). It answers the hot path
    itself and passes everything else to ``router_fn.rest`` (imported on first use: the named
    seam that keeps FastAPI off the connect path and out of the cold start). Lifespan: nothing to
    start, the router's Redis client to close at shutdown."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._rest: FastAPI | None = None

    @property
    def rest(self) -> FastAPI:
        if self._rest is None:
            from .rest import build_rest_app

            self._rest = build_rest_app(self.router)
        return self._rest

    def preload(self) -> None:
        """Build now what the first request that needs it would build: for a SnapStart snapshot."""
        _ = self.rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":  # perf: asgi-front-door
            path, method = scope["path"], scope["method"]
            if path == "/connect":
                if method == "GET":
                    return await send_answer(send, await self.router.connect(scope))
                if method == "OPTIONS":
                    return await send_answer(send, PREFLIGHT)
            elif path == "/healthz" and method == "GET":
                return await send_answer(send, self.router.health())
        elif kind == "lifespan":
            return await self._lifespan(receive, send)
        await self.rest(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.router.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: RouterSettings | None = None, admission: Admission | None = None) -> RouterApp:
    if settings is None:  # the Lambda's case: its configuration is its environment
        settings = RouterSettings.from_env(os.environ)
    return RouterApp(Router(settings, admission))
