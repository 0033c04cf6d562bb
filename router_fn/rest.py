"""The router's HTTP surface beyond its hot path, on FastAPI: the browser library
(``GET /client/...``), and every refusal in the protocol's shape (no such route, a method not
allowed, a malformed request, a crash).

``router_fn.app.RouterApp`` answers ``GET``/``OPTIONS /connect`` and ``GET /healthz`` itself and
builds this app only when some other request arrives: FastAPI and pydantic are most of the
handler's import time, which a Lambda's cold start pays and the connect path does not need. The
routes of the hot path are declared here too, so a request the front door does not take (``POST
/connect``, ``HEAD /healthz``) is refused exactly as before (405 with ``allow``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from polysocket_core import edge, wire
from polysocket_core.errors import ErrorCode, PolysocketError

from .client_library import LIBRARY_FILES, ClientLibrary

if TYPE_CHECKING:
    from .app import Router


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


def build_rest_app(router: Router) -> FastAPI:
    """The FastAPI app for everything the front door does not answer itself. No lifespan: the
    front door closes the router (this app may never be built)."""
    app = FastAPI(title="polysocket router", docs_url=None, redoc_url=None, openapi_url=None,
                  exception_handlers={
                      HTTPException: _http_exception,
                      RequestValidationError: _validation_error,
                      Exception: _internal_error,
                  })

    @app.get("/connect")
    async def connect(request: Request) -> Response:
        return to_response(*await router.connect(request.scope))

    @app.options("/connect")
    async def preflight() -> Response:
        return to_response(edge.PREFLIGHT_STATUS, edge.PREFLIGHT_HEADERS, b"")

    @app.get("/healthz")
    async def healthz() -> Response:
        return to_response(*router.health())

    static_dir = router.settings.static_dir
    if static_dir and Path(static_dir).is_dir():
        # Imported here: only `polysocket dev` serves a directory, and the Lambda never pays for it.
        from starlette.staticfiles import StaticFiles

        app.mount("/client", StaticFiles(directory=static_dir, html=True), name="client")
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
