"""The relay's own lifecycle (relay_node.server, no uvicorn): start-up failure, stop while a long
poll is pending, and a second signal cutting a drain short. The server is driven in process with a
stub node on a loopback port."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

import relay_node.server as server_mod
from polysocket_cli.processes import REPO_ROOT, free_port
from relay_node.server import RelayServer
from tests.support.stub_node import StubNode


@pytest.mark.stack
def test_startup_failure_exits_3_without_listening() -> None:
    port = free_port()
    dead = free_port()  # nothing listens there: registering with the control plane fails
    proc = subprocess.run([sys.executable, "-m", "polysocket_cli", "relay", "--port", str(port), "--redis-url",
                           f"redis://127.0.0.1:{dead}/0", "--fqdn", f"n.localhost:{port}", "--node-id", "n"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "relay startup failed" in proc.stderr


async def get(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    return reader, writer


async def test_first_signal_drains_while_serving_then_stops() -> None:
    node = StubNode()
    port = free_port()
    server = RelayServer(node, "127.0.0.1", port)
    serving = asyncio.create_task(server.serve(install_signals=False))
    await asyncio.sleep(0.2)
    reader, writer = await get(port)
    server.on_signal()  # drain: the node keeps serving
    await asyncio.sleep(0.1)
    assert not serving.done()
    node.release.set()
    assert (await reader.read(4096)).endswith(b"done")  # answered during the drain
    node.drained.set()  # drain over: the server stops by itself
    assert await asyncio.wait_for(serving, 10) == 0
    assert node.events == ["start", "stop"]
    writer.close()


async def test_second_signal_stops_with_a_graceful_period_for_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "GRACEFUL_SHUTDOWN_S", 0.3)
    node = StubNode()
    port = free_port()
    server = RelayServer(node, "127.0.0.1", port)
    serving = asyncio.create_task(server.serve(install_signals=False))
    await asyncio.sleep(0.2)
    _, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await get(port)  # a long poll that never answers
    await asyncio.sleep(0.1)
    server.on_signal()
    server.on_signal()  # stop now: the pending answer is cut after the graceful period
    assert await asyncio.wait_for(serving, 5) == 0
    assert node.events == ["start", "stop"] and not server.connections.open and not server.connections.tasks
    assert await reader.read(4096) == b""
    writer.close()
    idle_writer.close()
