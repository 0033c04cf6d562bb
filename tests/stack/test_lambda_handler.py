"""The real Mangum handler fed real API Gateway (HTTP API v2, REST API v1) and ALB event shapes,
against a real Valkey, relay node and echo target."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from polysocket_cli.processes import REPO_ROOT, Stack

pytestmark = pytest.mark.stack

FIXTURES = Path(__file__).parent.parent / "fixtures"
ORIGIN = "https://app.example.com"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class FakeContext:
    """The Lambda context object: a plain attribute bag the runtime passes (no AWS here)."""

    function_name = "polysocket-router"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


@pytest.fixture(scope="module")
def lambda_env() -> Iterator[dict[str, str]]:
    s = Stack()
    old = dict(os.environ)
    try:
        s.start_valkey()
        s.start_relay("node1")
        echo = s.start_echo()
        token = s.create_token(origins=[ORIGIN])
        os.environ.update({"POLYSOCKET_REDIS_URL": s.redis_url, "POLYSOCKET_ALLOW_TARGET_CIDRS": "127.0.0.0/8"})
        yield {"token": token, "echo": f"ws://127.0.0.1:{echo.port}/", "redis_url": s.redis_url}
    finally:
        os.environ.clear()
        os.environ.update(old)
        s.stop()


@pytest.fixture(scope="module")
def handler(lambda_env: dict[str, str]) -> Handler:
    import router_fn.handler

    module = importlib.reload(router_fn.handler)  # built with this module's environment
    return module.handler  # type: ignore[no-any-return]


def event(kind: str, params: dict[str, str], method: str = "GET", path: str = "/connect") -> dict[str, Any]:
    ev: dict[str, Any] = copy.deepcopy(json.loads((FIXTURES / f"{kind}.json").read_text()))
    if kind == "apigw_http_v2":
        ev["rawQueryString"] = urlencode(params)
        ev["queryStringParameters"] = params
        ev["requestContext"]["http"]["method"] = method
        ev["requestContext"]["http"]["path"] = ev["rawPath"] = path
        ev["routeKey"] = ev["requestContext"]["routeKey"] = f"{method} {path}"
    elif kind == "apigw_rest_v1":
        ev["queryStringParameters"] = params or None
        ev["multiValueQueryStringParameters"] = {k: [v] for k, v in params.items()} or None
        ev["httpMethod"] = ev["requestContext"]["httpMethod"] = method
        ev["path"] = ev["resource"] = path
    else:  # ALB passes parameters percent-encoded, as the browser sent them
        ev["queryStringParameters"] = {k: quote(v, safe="") for k, v in params.items()}
        ev["httpMethod"] = method
        ev["path"] = path
    return ev


def headers_of(resp: dict[str, Any]) -> dict[str, str]:
    h = {k.lower(): v for k, v in resp.get("headers", {}).items()}
    for k, values in resp.get("multiValueHeaders", {}).items():
        h[k.lower()] = values[-1]
    return h


KINDS = ["apigw_http_v2", "apigw_rest_v1", "alb"]


@pytest.mark.parametrize("kind", KINDS)
def test_jsonp_connect_through_handler(handler: Handler, lambda_env: dict[str, str], kind: str) -> None:
    params = {"cb": "PolySocket._c.c1", "from": "polysocketjs-0.1.0", "target": lambda_env["echo"],
              "token": lambda_env["token"]}
    resp = handler(event(kind, params), FakeContext())
    assert resp["statusCode"] == 200
    h = headers_of(resp)
    assert h["content-type"] == "application/javascript; charset=utf-8"
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store"
    body = resp["body"]
    assert body.startswith("/**/PolySocket._c.c1(") and body.endswith(");")
    answer = json.loads(body[len("/**/PolySocket._c.c1("):-2])
    assert answer["ok"] is True and ".node1.localhost:" in answer["fqdn"] and len(answer["socket"]) == 32


@pytest.mark.parametrize("kind", KINDS)
def test_json_errors_keep_status_and_cors(handler: Handler, lambda_env: dict[str, str], kind: str) -> None:
    resp = handler(event(kind, {"from": "x", "target": lambda_env["echo"], "token": "pst_bogus-token-value"}),
                   FakeContext())
    assert resp["statusCode"] == 401
    h = headers_of(resp)
    assert h["content-type"] == "application/json" and h["access-control-allow-origin"] == "*"
    assert json.loads(resp["body"])["error"] == "unauthorized"
    resp = handler(event(kind, {"from": "x", "target": "http://nope/"}), FakeContext())
    assert resp["statusCode"] == 400 and json.loads(resp["body"])["error"] == "bad_request"


@pytest.mark.parametrize("kind", KINDS)
def test_origin_comes_from_referer_in_events(handler: Handler, lambda_env: dict[str, str], kind: str) -> None:
    ev = event(kind, {"from": "x", "target": lambda_env["echo"], "token": lambda_env["token"]})
    for key in ("headers", "multiValueHeaders"):
        if ev.get(key):
            ev[key] = {k: v for k, v in ev[key].items() if k.lower() != "referer"}
    resp = handler(ev, FakeContext())
    assert resp["statusCode"] == 403 and json.loads(resp["body"])["error"] == "forbidden_origin"


@pytest.mark.parametrize("kind", KINDS)
def test_healthz_and_preflight(handler: Handler, kind: str) -> None:
    resp = handler(event(kind, {}, path="/healthz"), FakeContext())
    assert resp["statusCode"] == 200 and json.loads(resp["body"])["ok"] is True
    resp = handler(event(kind, {}, method="OPTIONS"), FakeContext())
    assert resp["statusCode"] == 204 and headers_of(resp)["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["polysocket.js", "polysocket.min.js"])
def test_the_browser_library_is_served_where_the_docs_say(handler: Handler, kind: str, name: str) -> None:
    """``<script src="{router}/client/polysocket.js">`` (docs/client.md) against the router as deployed:
    the file of the polysocket_client package, cacheable, then revalidated with a bodiless 304."""
    resp = handler(event(kind, {}, path=f"/client/{name}"), FakeContext())
    assert resp["statusCode"] == 200 and not resp.get("isBase64Encoded")
    assert resp["body"] == (REPO_ROOT / "client" / name).read_text()
    h = headers_of(resp)
    assert h["content-type"] == "text/javascript; charset=utf-8" and h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "public, max-age=3600" and h["access-control-allow-origin"] == "*"
    etag = h["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)

    again = event(kind, {}, path=f"/client/{name}")
    for key in ("headers", "multiValueHeaders"):
        if again.get(key) is not None:
            again[key]["if-none-match"] = f'"other", W/{etag}' if key == "headers" else [f'"other", W/{etag}']
    resp = handler(again, FakeContext())
    assert resp["statusCode"] == 304 and not resp.get("body")
    assert headers_of(resp)["etag"] == etag and headers_of(resp)["cache-control"] == "public, max-age=3600"

    stale = event(kind, {}, path=f"/client/{name}")
    for key in ("headers", "multiValueHeaders"):
        if stale.get(key) is not None:
            stale[key]["if-none-match"] = '"0123"' if key == "headers" else ['"0123"']
    assert handler(stale, FakeContext())["statusCode"] == 200


@pytest.mark.parametrize("path", ["/client/demo.html", "/client/", "/client/../router_fn/app.py"])
def test_only_the_library_is_served(handler: Handler, path: str) -> None:
    """The demo pages are `polysocket dev`'s; nothing else of the package is reachable."""
    resp = handler(event("apigw_http_v2", {}, path=path), FakeContext())
    assert resp["statusCode"] == 404 and json.loads(resp["body"])["error"] == "not_found"


def test_warm_invocations_reuse_one_redis_client(handler: Handler, lambda_env: dict[str, str]) -> None:
    import router_fn.handler

    params = {"from": "x", "target": lambda_env["echo"], "token": lambda_env["token"]}
    handler(event("apigw_http_v2", params), FakeContext())
    client = router_fn.handler.app.router._redis
    assert client is not None
    for _ in range(3):
        assert handler(event("apigw_http_v2", params), FakeContext())["statusCode"] == 200
    assert router_fn.handler.app.router._redis is client


def test_import_does_no_io() -> None:
    """Importing the handler with Redis pointing at a closed loopback port succeeds: nothing connects
    at import time (a connect would raise ConnectionRefused) and no client exists yet."""
    code = "import router_fn.handler as h; assert h.app.router._redis is None"
    env = {**os.environ, "POLYSOCKET_REDIS_URL": "redis://127.0.0.1:1/0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


FRONT_DOOR_PROBE = """
import json, sys
import router_fn.handler as h
from tests.stack.test_lambda_handler import FakeContext, event
loaded = {"import": "fastapi" in sys.modules}
for path, method in (("/healthz", "GET"), ("/connect", "OPTIONS"), ("/connect", "GET")):
    ev = event("apigw_http_v2", {"from": "x", "target": "ws://127.0.0.1:1/"}, method=method, path=path)
    status = h.handler(ev, FakeContext())["statusCode"]
    loaded[f"{method} {path} {status}"] = "fastapi" in sys.modules or h.app._rest is not None
answer = h.handler(event("apigw_http_v2", {}, path="/nowhere"), FakeContext())
loaded[f"GET /nowhere {answer['statusCode']} {json.loads(answer['body'])['error']}"] = "fastapi" in sys.modules
print(json.dumps(loaded))
"""


def test_fastapi_is_loaded_only_for_what_the_front_door_does_not_answer() -> None:
    """The handler's import and the hot path (``GET /healthz``, ``OPTIONS``/``GET /connect``) never
    load FastAPI (bench/PERF_LEDGER.md, ``asgi-front-door``); the first other request builds the
    FastAPI app, which answers it in the protocol's shape. Redis is a closed port: the connect is
    answered ``no_relay``, by the front door all the same."""
    env = {**os.environ, "POLYSOCKET_REDIS_URL": "redis://127.0.0.1:1/0", "POLYSOCKET_ADMISSION": "open"}
    out = subprocess.run([sys.executable, "-c", FRONT_DOOR_PROBE], env=env, cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "import": False, "GET /healthz 200": False, "OPTIONS /connect 204": False, "GET /connect 503": False,
        "GET /nowhere 404 not_found": True}


def test_a_snapstart_init_builds_everything_before_the_snapshot() -> None:
    """Under SnapStart the import runs once, before the snapshot: it builds the FastAPI app too, so
    no restored instance imports it on a request. Lambda says which init it is in an environment
    variable (set by hand here: no Lambda runtime runs in the tests)."""
    code = ("import sys, router_fn.handler as h; "
            "print('fastapi' in sys.modules, h.app._rest is not None, h.app.router._redis is None)")
    env = {**os.environ, "POLYSOCKET_REDIS_URL": "redis://127.0.0.1:1/0",
           "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]


def _without(ev: dict[str, Any], header: str) -> None:
    for key in ("headers", "multiValueHeaders"):
        if ev.get(key):
            ev[key] = {k: v for k, v in ev[key].items() if k.lower() != header}


def _set_header(ev: dict[str, Any], name: str, value: str) -> None:
    _without(ev, name)
    if ev.get("multiValueHeaders"):
        ev["multiValueHeaders"][name] = [value]
    ev.setdefault("headers", {})[name] = value


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_referer_is_forbidden_origin(handler: Handler, lambda_env: dict[str, str], kind: str) -> None:
    """D4: a Referer urlsplit cannot parse used to answer 500 (and log a traceback)."""
    for referer in ("http://[::1/x", "http://[not-an-ip]/", "https://a.example:99999/"):
        ev = event(kind, {"from": "x", "target": lambda_env["echo"], "token": lambda_env["token"]})
        _set_header(ev, "referer", referer)
        resp = handler(ev, FakeContext())
        assert resp["statusCode"] == 403, (referer, resp)
        assert json.loads(resp["body"])["error"] == "forbidden_origin"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("method", "path", "status", "error"), [
    ("GET", "/nope", 404, "not_found"),
    ("POST", "/connect", 405, "method_not_allowed"),
    ("DELETE", "/healthz", 405, "method_not_allowed"),
])
def test_router_refusals_use_the_protocol_shape(handler: Handler, kind: str, method: str, path: str,
                                                status: int, error: str) -> None:
    """D9: Starlette's own 404/405 answers, in the protocol's error shape and with its headers."""
    resp = handler(event(kind, {}, method=method, path=path), FakeContext())
    assert resp["statusCode"] == status
    h = headers_of(resp)
    assert h["content-type"] == "application/json"
    assert (h["x-content-type-options"], h["cache-control"], h["referrer-policy"]) == (
        "nosniff", "no-store", "no-referrer")
    assert h["access-control-allow-origin"] == "*"
    body = json.loads(resp["body"])
    assert body["ok"] is False and body["error"] == error and isinstance(body["message"], str)
    # With a callback, a script-tag client gets the error as JSONP (a browser runs only 2xx scripts).
    resp = handler(event(kind, {"cb": "f"}, method=method, path=path), FakeContext())
    assert resp["statusCode"] == 200 and resp["body"].startswith("/**/f({") and f'"error":"{error}"' in resp["body"]
    assert headers_of(resp)["x-content-type-options"] == "nosniff"


def _rate_keys(redis_url: str) -> set[str]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return {k.decode() for k in client.scan_iter(match="ps:rl:ip:*")}
    finally:
        client.close()


@pytest.mark.parametrize(("kind", "forwarded", "expected"), [
    # API Gateway: the source IP from requestContext; X-Forwarded-For entries are the client's claim.
    ("apigw_http_v2", "6.6.6.6, 203.0.113.7", "203.0.113.7"),
    ("apigw_rest_v1", "6.6.6.7, 198.51.100.23", "198.51.100.23"),
    # ALB: the last entry is the one the load balancer appended.
    ("alb", "6.6.6.8, 192.0.2.44", "192.0.2.44"),
])
def test_rate_limit_counts_the_front_doors_address(handler: Handler, lambda_env: dict[str, str], kind: str,
                                                    forwarded: str, expected: str) -> None:
    """D10: the per-IP counter is keyed by the address AWS saw, never by a spoofed X-Forwarded-For."""
    before = _rate_keys(lambda_env["redis_url"])
    ev = event(kind, {"from": "x", "target": lambda_env["echo"], "token": lambda_env["token"]})
    _set_header(ev, "x-forwarded-for", forwarded)
    assert handler(ev, FakeContext())["statusCode"] == 200
    new = _rate_keys(lambda_env["redis_url"]) - before
    ips = {k.split(":")[3] for k in _rate_keys(lambda_env["redis_url"])}
    assert expected in ips and not any(k.split(":")[3].startswith("6.6.6.") for k in new), new
