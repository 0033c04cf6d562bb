"""Every admission rule, allowed and refused, through the router's HTTP API on real processes.

Only loopback targets are ever used on the network; non-loopback forms are covered by the
guard's decision in test_ssrf.py.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis

from polysocket_cli.processes import REPO_ROOT, Proc, Stack
from router_fn.tokens import digest
from tests.support.wire_client import connect, connect_raw

pytestmark = pytest.mark.stack

ORIGIN = "https://app.example.com"


@dataclass
class AdmissionStack:
    stack: Stack
    relay: Proc
    router: str  # allowlists loopback
    strict_router: str  # no allowlist: the SSRF guard refuses every loopback form
    limited_router: str  # 3 connects per minute per client address and per token
    echo: str

    def token(self, **kw: object) -> str:
        return self.stack.create_token(**kw)  # type: ignore[arg-type]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "polysocket_cli", "token", *args,
                               "--redis-url", self.stack.redis_url], capture_output=True, text=True,
                              cwd=REPO_ROOT, timeout=30)


@pytest.fixture(scope="module")
def adm() -> Iterator[AdmissionStack]:
    s = Stack()
    try:
        s.start_valkey()
        relay = s.start_relay("node1", extra=["--heartbeat-ttl", "1"])
        router = s.start_router()
        strict = s.start_router(allow_cidrs="")
        limited = s.start_router(env={"POLYSOCKET_RATE_PER_IP": "3/60", "POLYSOCKET_RATE_PER_TOKEN": "3/60"})
        echo = s.start_echo()
        yield AdmissionStack(s, relay, f"http://127.0.0.1:{router.port}", f"http://127.0.0.1:{strict.port}",
                             f"http://127.0.0.1:{limited.port}", f"ws://127.0.0.1:{echo.port}/")
    finally:
        s.stop()


async def attempt(http: httpx.AsyncClient, router: str, target: str, token: str | None,
                  origin: str | None = ORIGIN, referer: str | None = None, cb: str | None = None) -> dict[str, object]:
    params = {"from": "pytest", "target": target}
    if token is not None:
        params["token"] = token
    headers = {}
    if origin:
        headers["origin"] = origin
    if referer:
        headers["referer"] = referer
    return await connect_raw(http, router, params, headers=headers, cb=cb)


async def test_token_required_known_and_active(adm: AdmissionStack, http: httpx.AsyncClient) -> None:
    for token in (None, "pst_not-a-real-token-at-all"):
        answer = await attempt(http, adm.router, adm.echo, token)
        assert (answer["status"], answer["error"]) == (401, "unauthorized")
    good = adm.token()
    assert (await attempt(http, adm.router, adm.echo, good))["ok"] is True


async def test_expired_token_is_unauthorized(adm: AdmissionStack, http: httpx.AsyncClient) -> None:
    token = adm.token(extra=["--expires-in", "1s"])
    await asyncio.sleep(1.2)
    answer = await attempt(http, adm.router, adm.echo, token)
    assert answer["error"] == "unauthorized" and "expired" in str(answer["message"])


async def test_origin_rules(adm: AdmissionStack, http: httpx.AsyncClient) -> None:
    token = adm.token(origins=[ORIGIN, "https://*.partner.example"])
    assert (await attempt(http, adm.router, adm.echo, token, origin=ORIGIN))["ok"] is True
    assert (await attempt(http, adm.router, adm.echo, token, origin="https://x.partner.example"))["ok"] is True
    # script-tag GETs carry no Origin: the Referer's origin counts
    assert (await attempt(http, adm.router, adm.echo, token, origin=None,
                          referer=f"{ORIGIN}/some/page?x=1"))["ok"] is True
    # A Referer that is no URL (D4: "http://[::1/x" used to answer 500) is refused like a wrong one.
    for origin, referer in (("https://evil.example", None), (None, "https://evil.example/"), (None, None),
                            (None, "http://[::1/x"), (None, "https://app.example.com:99999/")):
        answer = await attempt(http, adm.router, adm.echo, token, origin=origin, referer=referer)
        assert (answer["status"], answer["error"]) == (403, "forbidden_origin"), (origin, referer)
    star = adm.token(origins=["*"])
    assert (await attempt(http, adm.router, adm.echo, star, origin=None))["ok"] is True


async def test_target_rules(adm: AdmissionStack, http: httpx.AsyncClient) -> None:
    port = adm.echo.rsplit(":", 1)[1].rstrip("/")
    token = adm.token(targets=[f"ws://127.0.0.1:{port}/chat/*"])
    assert (await attempt(http, adm.router, f"ws://127.0.0.1:{port}/chat/room", token))["ok"] is True
    for target in (f"ws://127.0.0.1:{port}/admin", f"ws://127.0.0.1:{int(port) + 1}/chat/x",
                   f"wss://127.0.0.1:{port}/chat/x", f"ws://localhost:{port}/chat/x"):
        answer = await attempt(http, adm.router, target, token)
        assert (answer["status"], answer["error"]) == (403, "forbidden_target"), target


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "2130706433", "0x7f000001", "0177.0.0.1", "127.1",
                                  "localhost.", "localhost", "[::ffff:127.0.0.1]"])
async def test_ssrf_guard_blocks_loopback_forms(adm: AdmissionStack, http: httpx.AsyncClient, host: str) -> None:
    token = adm.token(targets=["ws://*:*/*"])
    port = adm.echo.rsplit(":", 1)[1].rstrip("/")
    answer = await attempt(http, adm.strict_router, f"ws://{host}:{port}/", token)
    assert (answer["status"], answer["error"]) == (403, "blocked_target"), answer
    jsonp = await attempt(http, adm.strict_router, f"ws://{host}:{port}/", token, cb="cb")
    assert jsonp["ok"] is False and jsonp["error"] == "blocked_target"


async def test_allowlisted_loopback_connects_via_pinned_address(adm: AdmissionStack, http: httpx.AsyncClient) -> None:
    token = adm.token(targets=["ws://*:*/*"])
    port = adm.echo.rsplit(":", 1)[1].rstrip("/")
    for host in ("127.0.0.1", "2130706433", "0x7f000001", "127.1", "localhost."):
        c = await connect(http, adm.router, f"ws://{host}:{port}/", token=token, headers={"origin": ORIGIN})
        assert (await c.send_text(host))["ok"]
        assert [m["data"] for m in await c.receive(1)] == [host]
        await c.close()


async def test_relay_connects_only_to_the_pinned_address(adm: AdmissionStack) -> None:
    """An establish request naming an unresolvable host but pinned to 127.0.0.1 reaches the target:
    the relay used the checked address and never asked DNS."""
    from polysocket_core.control import EstablishReply, EstablishRequest, Keys

    port = adm.echo.rsplit(":", 1)[1].rstrip("/")
    r = aioredis.Redis.from_url(adm.stack.redis_url)
    k = Keys()
    import time

    req = EstablishRequest(id="pin-test", socket="P" * 32, target=f"ws://pinned.invalid:{port}/", protocols=[],
                           expires_at_ms=int(time.time() * 1000) + 10_000, addresses=["127.0.0.1"])
    await r.rpush(k.inbox("node1"), req.encode())
    first = EstablishReply.decode((await r.blpop([k.reply("pin-test")], timeout=10))[1])
    last = first
    if first.phase == "ack":  # an open slower than the relay's ACK_AFTER_S (a loaded machine) is acked first
        last = EstablishReply.decode((await r.blpop([k.reply("pin-test")], timeout=10))[1])
    await r.aclose()
    assert first.phase in ("ack", "done") and last.phase == "done"
    assert last.ok, last


async def test_connection_limit_counts_and_releases(adm: AdmissionStack, http: httpx.AsyncClient) -> None:
    token = adm.token(max_sockets=2)
    a = await connect(http, adm.router, adm.echo, token=token)
    await connect(http, adm.router, adm.echo, token=token)
    answer = await attempt(http, adm.router, adm.echo, token)
    assert (answer["status"], answer["error"]) == (429, "limit_exceeded")
    async with from_address("127.0.2.1") as client:  # across several node heartbeats: never over
        for _ in range(8):
            answer = await attempt(client, adm.router, adm.echo, token)
            assert answer.get("error") == "limit_exceeded", answer
            await asyncio.sleep(0.25)
    await a.close()
    await a.receive(1)
    await a.poll(ttl=0)  # acks the close: the socket is freed
    await asyncio.sleep(1.5)  # the node's heartbeat publishes the new count
    assert (await attempt(http, adm.router, adm.echo, token))["ok"] is True


async def test_limit_released_when_node_dies(adm: AdmissionStack, http: httpx.AsyncClient) -> None:
    s = adm.stack
    doomed = s.start_relay("doomed", extra=["--heartbeat-ttl", "1", "--capacity", "100000000"])
    token = adm.token(max_sockets=1)
    c = await connect(http, adm.router, adm.echo, token=token)
    assert c.fqdn.split(".")[1] == "doomed"
    assert (await attempt(http, adm.router, adm.echo, token))["error"] == "limit_exceeded"
    doomed.popen.send_signal(signal.SIGKILL)
    doomed.popen.wait(10)
    await asyncio.sleep(1.5)  # past the dead node's heartbeat TTL
    again = await connect(http, adm.router, adm.echo, token=token)
    assert again.fqdn.split(".")[1] == "node1"


def from_address(ip: str) -> httpx.AsyncClient:
    """A client whose connections come from another loopback address (a distinct client IP)."""
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=ip), timeout=30)


async def test_rate_limit_per_client_address(adm: AdmissionStack) -> None:
    tokens = [adm.token() for _ in range(4)]  # a fresh token each time: only the address limit applies
    async with from_address("127.0.0.5") as client:
        results = [await attempt(client, adm.limited_router, adm.echo, t) for t in tokens]
    assert [r.get("ok") for r in results[:3]] == [True, True, True], results
    assert (results[3]["status"], results[3]["error"]) == (429, "rate_limited")
    assert "client address" in str(results[3]["message"])


async def test_rate_limit_per_token(adm: AdmissionStack) -> None:
    token = adm.token()
    results = []
    for i in range(4):  # a different address each time: only the token limit applies
        async with from_address(f"127.0.1.{i + 1}") as client:
            results.append(await attempt(client, adm.limited_router, adm.echo, token))
    assert [r.get("ok") for r in results[:3]] == [True, True, True], results
    assert (results[3]["status"], results[3]["error"]) == (429, "rate_limited")
    assert "token" in str(results[3]["message"])


async def test_refused_attempts_count_against_the_rate_and_keep_their_own_error(adm: AdmissionStack) -> None:
    """The token lookup and the counters share one round trip (bench/PERF_LEDGER.md,
    ``one-trip-admission``): an attempt a check refuses still counts, and is answered with that
    check's error, not ``rate_limited``, while the window is not full."""
    async with from_address("127.0.0.9") as client:
        refused = [await attempt(client, adm.limited_router, adm.echo, "pst_not-a-real-token-at-all")
                   for _ in range(2)]
        forbidden = await attempt(client, adm.limited_router, adm.echo, adm.token(origins=["https://other.test"]))
        over = await attempt(client, adm.limited_router, adm.echo, adm.token())
    assert [(r["status"], r["error"]) for r in refused] == [(401, "unauthorized")] * 2
    assert (forbidden["status"], forbidden["error"]) == (403, "forbidden_origin")
    assert (over["status"], over["error"]) == (429, "rate_limited"), over


async def test_only_token_hashes_are_stored(adm: AdmissionStack) -> None:
    token = adm.token()
    r = aioredis.Redis.from_url(adm.stack.redis_url)
    found_digest = False
    async for key in r.scan_iter():
        assert token.encode() not in key
        kind = await r.type(key)
        values: list[bytes] = []
        if kind == b"hash":
            for f, v in (await r.hgetall(key)).items():
                values += [f, v]
        elif kind == b"string":
            values.append(await r.get(key) or b"")
        elif kind == b"list":
            values += await r.lrange(key, 0, -1)
        elif kind == b"set":
            values += list(await r.smembers(key))
        assert all(token.encode() not in v for v in values), key
        found_digest |= key == f"{{ps:tokens}}token:{digest(token)}".encode()
    await r.aclose()
    assert found_digest


async def test_revocation_and_kill(adm: AdmissionStack, http: httpx.AsyncClient) -> None:
    token = adm.token()
    c = await connect(http, adm.router, adm.echo, token=token)
    listed = adm.cli("list", "--json")
    from router_fn.tokens import token_id_of

    tid = token_id_of(token)
    assert tid in listed.stdout and token not in listed.stdout
    shown = adm.cli("show", tid)
    assert shown.returncode == 0 and "sockets in use: 1" in shown.stdout
    revoked = adm.cli("revoke", tid, "--kill")
    assert revoked.returncode == 0, revoked.stderr
    got = await c.receive(1)
    assert got[0]["type"] == "close" and got[0]["code"] == 1008
    answer = await attempt(http, adm.router, adm.echo, token)
    assert answer["error"] == "unauthorized" and "revoked" in str(answer["message"])
    assert "revoked" in adm.cli("list").stdout


def test_token_cli_errors(adm: AdmissionStack) -> None:
    bad = adm.cli("create", "--origin", "not-an-origin", "--target", "ws://a/*", "--max-sockets", "1")
    assert bad.returncode == 2 and "origin" in bad.stderr
    bad = adm.cli("create", "--origin", "*", "--target", "http://a/*", "--max-sockets", "1")
    assert bad.returncode == 2 and "ws://" in bad.stderr
    missing = adm.cli("show", "000000000000")
    assert missing.returncode == 1 and "no token" in missing.stderr
    unreachable = subprocess.run([sys.executable, "-m", "polysocket_cli", "token", "list", "--redis-url",
                                  "redis://127.0.0.1:1/0"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=30)
    assert unreachable.returncode == 1 and "Redis" in unreachable.stderr


async def test_router_refusals_use_the_protocol_shape(adm: AdmissionStack, http: httpx.AsyncClient) -> None:
    """D9: the router's own 404 and 405 (uvicorn) carry the protocol's error shape and headers."""
    for method, path, status, error in (("GET", "/nope", 404, "not_found"),
                                        ("POST", "/connect", 405, "method_not_allowed")):
        resp = await http.request(method, f"{adm.router}{path}")
        assert resp.status_code == status and resp.json()["error"] == error, resp.text
        assert resp.headers["x-content-type-options"] == "nosniff" and resp.headers["cache-control"] == "no-store"
        resp = await http.request(method, f"{adm.router}{path}?cb=cb1")
        assert resp.status_code == 200 and resp.text.startswith("/**/cb1(") and error in resp.text
