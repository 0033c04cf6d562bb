"""The relay's protocol under uvicorn's server (bench/uvicorn_relay.py, the trial of issue 16): the
same lifecycle as relay_node.server's (test_relay_server.py), driven in process with a stub node on a
loopback port: a signal drains while serving, a second one stops with a graceful period, the signal
is not re-raised after the drain, a slot certificate is what it listens with, a busy port is exit 3."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from pathlib import Path
from types import FrameType

import pytest
import trustme

import bench.uvicorn_relay as host_mod
from bench.uvicorn_relay import DrainingUvicornServer, serve_under_uvicorn
from polysocket_cli.processes import free_port
from tests.support.stub_node import StubNode


async def started(node: StubNode, port: int) -> tuple[asyncio.Task[int], DrainingUvicornServer]:
    servers: list[DrainingUvicornServer] = []
    serving = asyncio.create_task(serve_under_uvicorn(node, "127.0.0.1", port, on_server=servers.append))  # type: ignore[arg-type]
    for _ in range(100):
        await asyncio.sleep(0.05)
        if servers and servers[0].started:
            return serving, servers[0]
    raise AssertionError("uvicorn did not start")


async def get(port: int, ctx: ssl.SSLContext | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="stub.localhost" if ctx else None)
    writer.write(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    return reader, writer


async def test_first_signal_drains_while_serving_then_stops() -> None:
    node = StubNode()
    port = free_port()
    seen: list[int] = []

    def recorder(sig: int, frame: FrameType | None) -> None:
        seen.append(sig)

    # uvicorn restores the handler it found and re-raises the signals it recorded: a recorded
    # SIGTERM would end a real relay with 143 instead of 0 after its drain.
    previous = signal.signal(signal.SIGTERM, recorder)
    try:
        serving, _ = await started(node, port)
        reader, writer = await get(port)
        signal.raise_signal(signal.SIGTERM)  # uvicorn's handler (ours): drain, the node keeps serving
        await asyncio.sleep(0.3)
        assert node.draining and not serving.done()
        node.release.set()
        assert (await reader.read(4096)).endswith(b"done")  # answered during the drain
        node.drained.set()  # drain over: the server stops by itself
        assert await asyncio.wait_for(serving, 10) == 0
        assert node.events == ["start", "stop"]
        assert seen == []  # not re-raised
        writer.close()
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_second_signal_stops_with_a_graceful_period_for_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_mod, "GRACEFUL_SHUTDOWN_S", 0.3)  # uvicorn takes whole seconds: 1 s
    node = StubNode()
    port = free_port()
    serving, server = await started(node, port)
    _, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await get(port)  # a long poll that never answers
    await asyncio.sleep(0.1)
    assert len(server.server_state.connections) == 2  # the relay's connections are uvicorn's
    server.request_stop()
    server.request_stop()  # stop now: the pending answer is cut after the graceful period
    assert await asyncio.wait_for(serving, 10) == 0
    assert node.events == ["start", "stop"] and not server.connections.open and not server.connections.tasks
    assert await reader.read(4096) == b""
    writer.close()
    idle_writer.close()


async def test_a_slot_certificate_obtained_while_starting_is_served(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("stub.localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    node = StubNode()
    node.ssl_context = server_ctx  # as RelayNode.start leaves a slot certificate's context
    node.release.set()
    port = free_port()
    serving, server = await started(node, port)
    reader, writer = await get(port, client_ctx)
    assert (await reader.read(4096)).endswith(b"done")
    writer.close()
    server.request_stop()
    server.request_stop()
    assert await asyncio.wait_for(serving, 10) == 0


async def test_a_port_in_use_is_exit_3_and_the_node_stops() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        node = StubNode()
        status = await serve_under_uvicorn(node, "127.0.0.1", busy.getsockname()[1])  # type: ignore[arg-type]
    assert status == 3
    assert node.events == ["start", "stop"]
