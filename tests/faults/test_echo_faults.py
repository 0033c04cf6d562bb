"""Issue 21, D4: misbehaving clients against a real ``polysocket echo`` process (the target the
relay's tests and the bench use). Before the fix, 250 half-finished opening handshakes under a
200-descriptor limit locked every real client out for good, and silent clients holding unfinished
fragmented messages grew it without bound (381 MiB with 20 of them)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import IO

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from polysocket_cli.processes import free_port, wait_port

from ..fuzz.test_http_fuzz import raw_run
from .conftest import MiB, Profile, rss_bytes, seed_for

pytestmark = [pytest.mark.faults]

FD_LIMIT = 200


@contextlib.contextmanager
def echo_process(fd_limit: int | None = None,
                 log: IO[bytes] | None = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``polysocket echo`` in its own process, optionally under a descriptor limit; ended by its handle."""
    port = free_port()

    def limit() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    proc = subprocess.Popen([sys.executable, "-m", "polysocket_cli", "echo", "--port", str(port)],
                            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                            preexec_fn=limit)
    try:
        wait_port(port, proc=proc)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def echoes(url: str) -> bool:
    async with connect(url, compression=None, open_timeout=10) as ws:
        await ws.send("real client")
        return await asyncio.wait_for(ws.recv(), 10) == "real client"


async def test_half_finished_handshakes_do_not_lock_real_clients_out() -> None:
    with echo_process(FD_LIMIT) as (port, _):
        url = f"ws://127.0.0.1:{port}/"
        halves = []
        for _ in range(250):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")  # never finished
            halves.append((reader, writer))
        await asyncio.sleep(0.5)
        assert all([await echoes(url) for _ in range(5)])  # before: opening handshake timed out
        ends = 0  # every half-open connection is dropped: made room for, or at its deadline (10 s)
        for reader, writer in halves:
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), 30) == b""
            ends += 1
            writer.close()
        assert ends == 250
        assert await echoes(url)


FRAGMENT = 8 * MiB
SILENT = 20
ASSEMBLY_BOUND = 64 * MiB  # the echo's default bound on messages being assembled
SLACK = 32 * MiB  # the copies of one fragment in flight, the allocator's


async def holds(ws: ClientConnection) -> bool:
    """True when the echo has read everything sent and still holds the connection (a pong comes
    after it); False when it closed it (over the bound)."""
    if ws.transport.is_closing() or ws.protocol.state is not State.OPEN:
        # Closed by the echo already: a ping now would make websockets abort a transport that is
        # gone (an AttributeError inside asyncio, seen once in CI), not raise ConnectionClosed.
        return False
    try:
        await asyncio.wait_for(await ws.ping(), 60)
        return True
    except ConnectionClosed:
        return False


async def test_silent_clients_with_unfinished_fragmented_messages_are_bounded() -> None:
    with echo_process() as (port, proc):
        url = f"ws://127.0.0.1:{port}/"
        assert await echoes(url)
        start = rss_bytes(proc.pid)
        clients = [await connect(url, compression=None, max_size=None) for _ in range(SILENT)]
        try:
            for ws in clients:
                ws.protocol.send_frame(Frame(Opcode.BINARY, b"\x00" * FRAGMENT, fin=False))
                ws.send_data()
            held = [await holds(ws) for ws in clients]
            grown = rss_bytes(proc.pid) - start
            print(f"echo RSS +{grown / MiB:.0f} MiB with {SILENT} x {FRAGMENT // MiB} MiB unfinished messages; "
                  f"{held.count(False)} closed (1009)")
            assert grown <= ASSEMBLY_BOUND + SLACK  # before: +160 MiB and more, never given back
            assert held.count(True) <= ASSEMBLY_BOUND // FRAGMENT
            assert await echoes(url)
        finally:
            for ws in clients:
                if not ws.transport.is_closing():  # one the echo closed: websockets' close() would
                    await ws.close()                # abort a transport already gone (as in holds())


async def test_raw_bytes_leave_the_echo_serving_without_a_traceback(profile: Profile) -> None:
    """The fault campaign's raw-bytes client (tests/fuzz/test_http_fuzz.py) against the echo: it
    found pipelined handshake requests answered twice (websockets' AssertionError, a fatal error
    on the transport, logged with its traceback)."""
    seed = seed_for("PSTEST_FUZZ_SEED")
    n = profile.http_fuzz_requests // 3
    with tempfile.TemporaryFile() as log:
        with echo_process(log=log) as (port, proc):
            start = rss_bytes(proc.pid)
            answered = await raw_run(port, n, seed, allowed={})
            grown = (rss_bytes(proc.pid) - start) / MiB
            print(f"echo: {answered}/{n} raw byte strings got an HTTP answer; RSS +{grown:.0f} MiB")
            assert proc.poll() is None and await echoes(f"ws://127.0.0.1:{port}/")
            assert grown < 48, grown
        log.seek(0)
        text = log.read().decode(errors="replace")
    assert "Traceback" not in text, text[-3000:]
