"""The control plane as deployed (ElastiCache with transit encryption and an auth token): a real
Redis over TLS with AUTH (Debian's redis-server, tests/support/redis_tls.py), certificate
verification on, the CA given as the docs say.

- router, relay and ``polysocket token`` work end to end over ``rediss://user:password@``;
- a wrong password, an untrusted certificate and a plain-text URL to the TLS port each give one
  line that says why (relay and token: at start, then exit; router: a typed ``no_relay`` to the
  browser and the reason logged once, however many connects fail);
- a router that sat frozen past an idle timeout that silently dropped its pooled connection (a
  NAT's, a Lambda's VPC endpoint's) serves its next connect without an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from polysocket_cli.processes import Proc, Stack, free_port
from polysocket_core.redis_client import ANSWER_SOON, HEALTH_CHECK_S
from relay_node.server import STARTUP_FAILURE
from tests.stack.test_lambda_handler import FakeContext
from tests.stack.test_lambda_handler import event as lambda_event
from tests.support.redis_tls import AUTH_TOKEN, PASSWORD, TlsRedis, start_tls_redis
from tests.support.wire_client import connect, connect_raw

pytestmark = pytest.mark.stack

CA_ENV = "POLYSOCKET_REDIS_CA_FILE"


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TlsRedis]:
    redis = start_tls_redis()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        yield s
    finally:
        s.stop()



def token_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polysocket_cli", "token", *args, "--redis-url", url],
                          capture_output=True, text=True, timeout=60)


async def echo_once(http: httpx.AsyncClient, router: Proc, target: str, token: str, text: str) -> None:
    conn = await connect(http, f"http://127.0.0.1:{router.port}", target, token=token)
    assert (await conn.send_text(text))["ok"]
    assert [(m["type"], m["data"]) for m in await conn.receive(1)] == [("text", text)]
    await conn.close()


# --- it works ---------------------------------------------------------------------------------------

async def test_router_relay_and_token_over_tls_with_auth(tls_redis: TlsRedis, stack: Stack,
                                                         http: httpx.AsyncClient) -> None:
    """The CA given both documented ways: the setting's flag (token) and its variable (services)."""
    ca = {CA_ENV: str(tls_redis.ca_file)}
    stack.redis_url = tls_redis.url()
    stack.start_relay("tls1", env=ca)
    router = stack.start_router(env=ca)
    token = stack.create_token(extra=["--redis-ca-file", str(tls_redis.ca_file)])
    target = f"ws://127.0.0.1:{stack.start_echo().port}/"
    await echo_once(http, router, target, token, "over rediss")
    # ElastiCache's shape: the auth token as the default user's password, no user name.
    listed = token_cli(f"rediss://:{AUTH_TOKEN}@127.0.0.1:{tls_redis.port}/0", "list", "--json",
                       "--redis-ca-file", str(tls_redis.ca_file))
    assert listed.returncode == 0, listed.stderr
    assert "local development" in listed.stdout


def test_the_lambda_handler_over_tls_with_auth(tls_redis: TlsRedis, stack: Stack,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lambda's configuration is its environment (the URL and the CA file as the function's
    variables): the real Mangum handler answers a JSONP connect through a relay over rediss://."""
    import router_fn.handler

    ca = {CA_ENV: str(tls_redis.ca_file)}
    stack.redis_url = tls_redis.url()
    stack.start_relay("lambda1", env=ca)
    token = stack.create_token(origins=["https://app.example.com"],
                               extra=["--redis-ca-file", str(tls_redis.ca_file)])
    target = f"ws://127.0.0.1:{stack.start_echo().port}/"
    for name, value in {"POLYSOCKET_REDIS_URL": tls_redis.url(), "POLYSOCKET_ALLOW_TARGET_CIDRS": "127.0.0.0/8",
                        **ca}.items():
        monkeypatch.setenv(name, value)
    handler = importlib.reload(router_fn.handler).handler  # built from this environment, as a cold start
    params = {"cb": "PolySocket._c.c1", "from": "polysocketjs", "target": target, "token": token}
    resp = handler(lambda_event("apigw_http_v2", params), FakeContext())
    assert resp["statusCode"] == 200, resp
    answer = json.loads(resp["body"][len("/**/PolySocket._c.c1("):-2])
    assert answer["ok"] is True and ".lambda1.localhost:" in answer["fqdn"], answer


# --- one clear line when it cannot work -------------------------------------------------------------

@dataclass(frozen=True)
class Mistake:
    name: str
    says: str  # what the one line must say

    def url(self, redis: TlsRedis) -> str:
        if self.name == "wrong password":
            return redis.url(password="not-the-password")
        return redis.url(scheme="redis" if self.name == "plain text to the TLS port" else "rediss")

    def env(self, redis: TlsRedis) -> dict[str, str]:
        """The CA is given when it is not the mistake (a plain-text URL cannot take one)."""
        return {CA_ENV: str(redis.ca_file)} if self.name == "wrong password" else {}


MISTAKES = [
    Mistake("wrong password", "refused the credentials (wrong user or password in the URL)"),
    Mistake("untrusted certificate", "cannot verify the TLS certificate of Redis at rediss://polysocket:***@"),
    Mistake("plain text to the TLS port", "if that port speaks TLS (ElastiCache with transit encryption), the URL "
                                          "starts rediss://"),
]


def problem_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line or " WARNING " in line]


def assert_one_clear_line(lines: list[str], output: str, mistake: Mistake, url: str) -> None:
    assert len(lines) == 1, output
    assert mistake.says in lines[0], output
    assert "Traceback" not in output, output
    assert PASSWORD not in output and "not-the-password" not in output, output  # the URL named, not its secret
    assert url.split("@")[1] in lines[0], output  # which Redis: host, port and database


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name.replace(" ", "-"))
def test_token_says_why_in_one_line(tls_redis: TlsRedis, mistake: Mistake) -> None:
    url = mistake.url(tls_redis)
    ca = mistake.env(tls_redis)
    out = token_cli(url, "list", *(["--redis-ca-file", ca[CA_ENV]] if ca else []))
    assert out.returncode == 1, out
    lines = out.stderr.splitlines()
    assert all(line.startswith("polysocket token: ") for line in lines), out.stderr
    assert_one_clear_line(lines, out.stderr, mistake, url)


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name.replace(" ", "-"))
def test_relay_says_why_in_one_line_and_exits(tls_redis: TlsRedis, mistake: Mistake) -> None:
    url, port = mistake.url(tls_redis), free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "polysocket_cli", "relay", "--port", str(port), "--redis-url", url,
         "--fqdn", f"bad.localhost:{port}", "--node-id", "bad"],
        capture_output=True, text=True, timeout=90, env={**_base_env(), **mistake.env(tls_redis)})
    assert proc.returncode == STARTUP_FAILURE, proc.stderr
    output = proc.stdout + proc.stderr
    assert_one_clear_line(problem_lines(output), output, mistake, url)
    assert "relay startup failed: " in output


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name.replace(" ", "-"))
async def test_router_answers_no_relay_and_logs_why_once(tls_redis: TlsRedis, stack: Stack,
                                                         http: httpx.AsyncClient, mistake: Mistake) -> None:
    url = mistake.url(tls_redis)
    stack.redis_url = url
    router = stack.start_router(env=mistake.env(tls_redis))
    for _ in range(3):  # three browsers: three typed answers, one log line
        answer = await connect_raw(http, f"http://127.0.0.1:{router.port}",
                                   {"from": "t", "target": "ws://127.0.0.1:9/", "token": "t" * 32})
        assert answer["error"] == "no_relay" and answer["status"] == 503, answer
    output = (stack.log_dir / "router.log").read_text(errors="replace")
    lines = [line for line in problem_lines(output) if "open admission" not in line]
    assert_one_clear_line(lines, output, mistake, url)
    assert "control plane unavailable: " in lines[0]


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != CA_ENV and not k.startswith("SSL_CERT")}


# --- a pooled connection that died in silence -----------------------------------------------------

class IdleDropProxy:
    """A loopback TCP forwarder that forgets a connection idle for ``idle_s``, as a NAT or a VPC
    endpoint does (350 s on AWS): from then on it swallows that connection's bytes both ways and
    sends no FIN or RST, so only a timeout of the client's can find out. New connections work."""

    def __init__(self, upstream_port: int, idle_s: float) -> None:
        self.upstream_port = upstream_port
        self.idle_s = idle_s
        self.accepted = 0
        self.forgotten = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", free_port())
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        loop = asyncio.get_running_loop()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        last = [loop.time()]
        forgotten = asyncio.Event()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if forgotten.is_set():
                        continue  # swallowed: the client hears nothing, not even a reset
                    last[0] = loop.time()
                    dst.write(data)
                    await dst.drain()
            dst.close()  # the peer closed (the client gave the connection up): pass the FIN on

        async def forget_when_idle() -> None:
            while loop.time() - last[0] < self.idle_s:
                await asyncio.sleep(0.1)
            forgotten.set()
            self.forgotten += 1

        watchdog = loop.create_task(forget_when_idle())
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            watchdog.cancel()
            writer.close()
            up_writer.close()
            self._tasks.discard(task)


@pytest.mark.parametrize("frozen_s", [HEALTH_CHECK_S + 1.0, 2.0], ids=["health-checked", "not-health-checked"])
async def test_a_router_frozen_past_an_idle_drop_serves_its_next_connect(
        tls_redis: TlsRedis, stack: Stack, http: httpx.AsyncClient, frozen_s: float) -> None:
    """SIGSTOP stands for Lambda's freeze, longer than the proxy's idle timeout. Past the
    health-check interval the pooled connection is PINGed first; within it (or where a frozen
    VM's monotonic clock stood still) the command itself goes out. Either way nothing comes back,
    the read times out (ANSWER_SOON) and the command runs on a fresh connection. The browser sees
    only a slower answer; the added time is printed (docs/deploy.md states it)."""
    ca = {CA_ENV: str(tls_redis.ca_file)}
    stack.redis_url = tls_redis.url()
    stack.start_relay("fresh", env=ca)  # the relay talks to Redis directly: only the router's path drops
    token = stack.create_token(extra=["--redis-ca-file", str(tls_redis.ca_file)])
    target = f"ws://127.0.0.1:{stack.start_echo().port}/"
    proxy = IdleDropProxy(tls_redis.port, idle_s=1.0)
    proxy_port = await proxy.start()
    try:
        stack.redis_url = tls_redis.url(port=proxy_port)  # the certificate names 127.0.0.1: still verified
        router = stack.start_router(env=ca)
        started = time.monotonic()
        await echo_once(http, router, target, token, "before the freeze")
        warm_s = time.monotonic() - started
        before = proxy.accepted

        router.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(frozen_s)
        finally:
            router.signal(signal.SIGCONT)
        assert proxy.forgotten >= before > 0  # every pooled connection of the router is dead now

        started = time.monotonic()
        await echo_once(http, router, target, token, "after the thaw")
        thawed_s = time.monotonic() - started
        assert proxy.accepted > before  # it got through on a fresh connection, not the dead one
        log = (stack.log_dir / "router.log").read_text(errors="replace")
        assert "control plane unavailable" not in log and "Traceback" not in log, log
        print(f"\nfrozen {frozen_s:g} s, connect+echo: warm {warm_s * 1000:.0f} ms, "
              f"first after the drop {thawed_s * 1000:.0f} ms (read timeout {ANSWER_SOON.read_timeout_s:g} s)")
    finally:
        await proxy.stop()
