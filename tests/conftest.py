"""Real components for the tests: a Valkey server, the router (uvicorn) and relay nodes as processes,
and echo targets on two WebSocket implementations (Python ``websockets`` and Node ``ws``)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from polysocket_cli.processes import Proc, Stack, free_port, wait_port
from tests.support.stack import RunningStack

TARGETS_DIR = Path(__file__).parent / "targets"


def start_node_echo(stack: Stack) -> Proc:
    node = shutil.which("node")
    if node is None or not (TARGETS_DIR / "node_modules" / "ws").is_dir():
        raise RuntimeError("Node.js and tests/targets/node_modules are required: run `make deps`")
    port = free_port()
    popen = subprocess.Popen([node, str(TARGETS_DIR / "ws_echo.js"), str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = Proc("node-echo", popen, port)
    stack.procs.append(proc)
    wait_port(port, proc=popen)
    return proc


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    """Valkey + router + two relay nodes + two echo targets, shared by the whole session."""
    s = Stack()
    try:
        s.start_valkey()
        relays = {n: s.start_relay(n, extra=["--buffer-bytes", "65536"]) for n in ("node1", "node2")}
        router = s.start_router()
        token = s.create_token()
        py_echo = s.start_echo()
        node_echo = start_node_echo(s)
        yield RunningStack(
            stack=s,
            router_url=f"http://127.0.0.1:{router.port}",
            relays=relays,
            token=token,
            targets={"websockets": f"ws://127.0.0.1:{py_echo.port}/",
                     "node_ws": f"ws://127.0.0.1:{node_echo.port}/"},
        )
    finally:
        s.stop()


@pytest.fixture(params=["websockets", "node_ws"])
def target(request: pytest.FixtureRequest, stack: RunningStack) -> str:
    """Each data-path test runs against both target implementations."""
    return stack.targets[str(request.param)]


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    """A Valkey of the module's own (for tests that build their fleet by hand), its URL."""
    s = Stack()
    try:
        s.start_valkey()
        yield s.redis_url
    finally:
        s.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        yield client
