"""D10: the per-IP rate limit trusts X-Forwarded-For only from configured proxies.

The walk itself is pure (router_fn.client_address); the uvicorn case runs the real app under a real
uvicorn server on loopback with a real Valkey, and reads the rate-limit counters it wrote. The
Lambda front doors (API Gateway v1/v2, ALB) are covered through the real Mangum handler in
test_lambda_handler.py.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import uvicorn

from polysocket_cli.processes import free_port, wait_port
from polysocket_core.control import Keys
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.wire import ConnectParams
from router_fn.admission import Admitted, ConnectContext
from router_fn.app import create_app
from router_fn.client_address import client_address, lambda_peer
from router_fn.ratelimit import Rate, RateLimiter
from router_fn.settings import RouterSettings
from router_fn.ssrf import parse_cidrs

PROXIES = parse_cidrs("10.0.0.0/8,127.0.0.1/32,::1/128")


def scope(peer: str, *forwarded: str) -> dict[str, Any]:
    return {"type": "http", "client": (peer, 5000),
            "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]}


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "expected"), [
    ("127.0.0.1", ["6.6.6.6"], [], "127.0.0.1"),  # no trusted proxies: XFF ignored, even from loopback
    ("203.0.113.9", ["6.6.6.6"], PROXIES, "203.0.113.9"),  # an untrusted peer's XFF is ignored
    ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], PROXIES, "198.51.100.1"),  # the proxy's entry, not the claim
    ("127.0.0.1", ["6.6.6.6, 198.51.100.1, 10.1.2.3"], PROXIES, "198.51.100.1"),  # two trusted hops
    ("127.0.0.1", ["6.6.6.6", "198.51.100.1"], PROXIES, "198.51.100.1"),  # repeated headers concatenate
    ("127.0.0.1", ["10.0.0.1, 10.0.0.2"], PROXIES, "10.0.0.1"),  # all trusted: the left-most
    ("127.0.0.1", ["6.6.6.6, not-an-ip"], PROXIES, "127.0.0.1"),  # a garbled entry stops the walk
    ("127.0.0.1", ["[2001:db8::1]:443"], PROXIES, "2001:db8::1"),
    ("::ffff:127.0.0.1", ["198.51.100.1"], PROXIES, "198.51.100.1"),  # v4-mapped peer
    ("127.0.0.1", [], PROXIES, "127.0.0.1"),
])
def test_forwarded_walk(peer: str, forwarded: list[str], trusted: list[Any], expected: str) -> None:
    assert client_address(scope(peer, *forwarded), trusted) == expected


def test_lambda_events_are_explicit() -> None:
    v2 = {"requestContext": {"http": {"sourceIp": "203.0.113.7"}},
          "headers": {"x-forwarded-for": "1.1.1.1, 203.0.113.7"}}
    assert lambda_peer(v2) == ("203.0.113.7", ["1.1.1.1"])
    v1 = {"requestContext": {"identity": {"sourceIp": "198.51.100.23"}},
          "multiValueHeaders": {"X-Forwarded-For": ["1.1.1.1, 198.51.100.23"]}}
    assert lambda_peer(v1) == ("198.51.100.23", ["1.1.1.1"])
    alb = {"requestContext": {"elb": {}}, "headers": {"x-forwarded-for": "1.1.1.1, 192.0.2.44"}}
    assert lambda_peer(alb) == ("192.0.2.44", ["1.1.1.1"])
    # Mangum puts the whole ALB header in scope["client"]: the event decides, not that string.
    s = {"type": "http", "client": ("1.1.1.1, 192.0.2.44", 0), "aws.event": alb, "headers": []}
    assert client_address(s, []) == "192.0.2.44"
    # CloudFront (trusted) in front of API Gateway: its entry for the viewer counts.
    behind_cf = {"requestContext": {"http": {"sourceIp": "10.9.9.9"}},
                 "headers": {"x-forwarded-for": "6.6.6.6, 198.51.100.77, 10.9.9.9"}}
    assert client_address({"aws.event": behind_cf}, PROXIES) == "198.51.100.77"


def serve(app: Any, **options: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", **options))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_port(port)
    return server, thread, port


def rate_ips(redis_url: str) -> set[str]:
    client = redis.Redis.from_url(redis_url)
    try:
        return {k.decode().split(":", 3)[3].rsplit(":", 1)[0] for k in client.scan_iter(match="ps:rl:ip:*")}
    finally:
        client.close()


async def connect_from(port: int, local: str, forwarded: str) -> None:
    transport = httpx.AsyncHTTPTransport(local_address=local)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        resp = await client.get(f"http://127.0.0.1:{port}/connect",
                                params={"from": "t", "target": "ws://127.0.0.1:9/", "token": "pst_unknown-token-value"},
                                headers={"x-forwarded-for": forwarded})
        assert resp.status_code == 401  # unknown token: refused before the limiter, nothing counted


@pytest.mark.parametrize(("trusted", "expected"), [([], "127.0.0.7"), (["127.0.0.0/8"], "198.51.100.5")])
async def test_uvicorn_router_counts_only_trusted_forwarding(valkey_url: str, trusted: list[str],
                                                             expected: str) -> None:
    """Under uvicorn with proxy_headers=False (what run_router must pass): a loopback peer's
    X-Forwarded-For counts only when loopback is a configured trusted proxy."""
    redis.Redis.from_url(valkey_url).flushdb()

    class Counting:  # the real limiter on a real Valkey, no token needed
        def __init__(self, limiter: RateLimiter) -> None:
            self.limiter = limiter

        async def admit(self, params: ConnectParams, ctx: ConnectContext) -> Admitted:
            await self.limiter.hit(ctx.client_ip, "")
            raise PolysocketError(ErrorCode.UNAUTHORIZED, "counted")

    settings = RouterSettings(redis_url=valkey_url, trusted_proxies=tuple(parse_cidrs(",".join(trusted))))
    limiter = RateLimiter(aioredis.Redis.from_url(valkey_url), Keys(), Rate(100, 60), Rate(0, 1))
    app = create_app(settings, Counting(limiter))
    server, thread, port = serve(app, proxy_headers=False)
    try:
        await connect_from(port, "127.0.0.7", "6.6.6.6, 198.51.100.5")
    finally:
        server.should_exit = True
        thread.join(10)
    assert rate_ips(valkey_url) == {expected}


async def test_uvicorn_default_proxy_headers_would_trust_loopback(valkey_url: str) -> None:
    """Why run_router must pass proxy_headers=False: uvicorn's default rewrites the client address
    from X-Forwarded-For for loopback peers before the app sees it (the D10 finding)."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["client"][0])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    for options, expected in (({}, "6.6.6.6"), ({"proxy_headers": False}, "127.0.0.1")):
        server, thread, port = serve(app, **options)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await client.get(f"http://127.0.0.1:{port}/", headers={"x-forwarded-for": "6.6.6.6"})
        finally:
            server.should_exit = True
            thread.join(10)
        assert seen[-1] == expected
