"""The relay-wide buffer budget (``relay_node.sockets.pressure``): the bound, the relief, the default,
and sockets on a table against real ``websockets`` targets, in process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from polysocket_cli.processes import free_port
from polysocket_core.control import EstablishRequest
from polysocket_core.lifecycle import SocketState
from relay_node.sockets import pressure
from relay_node.sockets.pressure import BufferBudget, budget_for, memory_limit

from .test_upstream import open_socket, wait_for


class Sock:
    def __init__(self) -> None:
        self.relieved_times = 0

    def relieved(self) -> None:
        self.relieved_times += 1


def test_a_socket_keeps_its_own_bound_until_the_budget_is_reached_then_its_share() -> None:
    budget = BufferBudget(10_000_000, capacity=10)
    assert budget.share == 1_000_000
    assert budget.took(9_999_999, 5_000_000) == 5_000_000
    assert budget.bound(5_000_000) == 5_000_000
    assert budget.took(1, 5_000_000) == 1_000_000  # the budget is reached: the share
    assert budget.bound(5_000_000) == 1_000_000 and budget.bound(50) == 50  # never above its own
    budget.released(1)
    assert budget.bound(5_000_000) == 5_000_000


def test_the_share_never_falls_below_what_a_stream_client_reads_before_it_acks() -> None:
    assert BufferBudget(512 << 20, capacity=100_000).share == pressure.MIN_SHARE


def test_parked_sockets_are_relieved_below_three_quarters_of_the_budget_once() -> None:
    budget = BufferBudget(1000, capacity=10)
    a, b, gone = Sock(), Sock(), Sock()
    budget.took(1200, 0)
    for s in (a, b, gone):
        budget.park(s)
    budget.forget(gone)  # freed, or resumed by its own client's ack
    budget.released(400)  # 800: below the budget, not below the resume mark (750)
    assert (a.relieved_times, b.relieved_times) == (0, 0) and budget.parked == 2
    budget.released(100)
    assert (a.relieved_times, b.relieved_times, gone.relieved_times) == (1, 1, 0) and budget.parked == 0
    budget.released(100)
    assert (a.relieved_times, b.relieved_times) == (1, 1)  # told once


def test_no_budget_never_presses() -> None:
    budget = BufferBudget(None, capacity=10_000)
    assert budget.took(1 << 40, 1 << 20) == 1 << 20
    assert budget.bound(1 << 20) == 1 << 20


def test_auto_is_a_quarter_of_the_cgroups_limit_else_the_machines(tmp_path: Path) -> None:
    limited, v2_unlimited, v1_unlimited = tmp_path / "limited", tmp_path / "v2", tmp_path / "v1"
    limited.write_text("2147483648\n")
    v2_unlimited.write_text("max\n")
    v1_unlimited.write_text("9223372036854771712\n")  # cgroup v1's "no limit"
    machine = memory_limit((tmp_path / "absent",))
    assert machine is not None and machine > 2 << 30  # this machine has more than 2 GiB
    assert memory_limit((limited,)) == 2 << 30
    assert memory_limit((v2_unlimited, limited)) == 2 << 30  # v2 without a limit: the v1 file is read next
    assert memory_limit((v2_unlimited,)) == machine
    assert memory_limit((v1_unlimited,)) == machine
    assert budget_for(None, memory_limit((limited,))) == 512 << 20  # a 2 GiB relay task: 512 MiB
    assert budget_for(4096, 2 << 30) == 4096  # as configured
    assert budget_for(None, None) is None
    assert pressure.MEMORY_FRACTION == 4


MESSAGES = 400
SIZE = 10_000


async def test_flooded_sockets_park_at_their_share_a_collecting_one_goes_on_and_nothing_is_lost() -> None:
    """Six targets flood six sockets whose clients do not collect (4 MB each, 1 MB own bound each);
    a seventh socket's client collects as its target ticks. With a 300 kB budget the flooded sockets
    park at their 30 kB share, the collecting one never parks, and once the clients collect, every
    message arrives in order."""
    flood_port, tick_port = free_port(), free_port()

    async def flood(conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            for i in range(MESSAGES):
                await conn.send(f"{i:05d}" + "x" * (SIZE - 5))
            await conn.wait_closed()

    async def tick(conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            for i in range(10_000):
                await conn.send(f"tick {i}")
                await asyncio.sleep(0.01)

    budget_bytes = 300_000  # its share: MIN_SHARE (65,536), above 300,000 / 10
    async with serve(flood, "127.0.0.1", flood_port, compression=None), \
            serve(tick, "127.0.0.1", tick_port, compression=None):
        table, first = await open_socket(f"ws://127.0.0.1:{flood_port}/", buffer_budget_bytes=budget_bytes,
                                         capacity=10, buffer_high_bytes=1_000_000, idle_timeout_s=3600.0)
        flooded = [first]
        for n in range(5):
            sock = await table.open(_request(f"f{n}", flood_port), table.ledger.take(f"f{n}", "tok"))
            sock.claim()
            flooded.append(sock)
        collecting = await table.open(_request("c", tick_port), table.ledger.take("c", "tok"))
        collecting.claim()
        budget = table.budget
        assert budget.budget == budget_bytes and budget.share == pressure.MIN_SHARE

        await wait_for(lambda: all(s._room is not None for s in flooded))
        await asyncio.sleep(0.3)  # any read under way lands
        # each parked at its share, well below its own bound: the budget holds them
        assert all(s.outbound.unacked_bytes < 1_000_000 for s in flooded)
        # the budget, a share per socket, and one read (256 KiB) of messages per socket; by their own
        # bound alone the six would hold over 6 MB
        assert budget.held < budget_bytes + 7 * budget.share + len(flooded) * 270_000, budget.held
        assert budget.held == sum(s.outbound.unacked_bytes for s in [*flooded, collecting])
        assert table.metrics.budget_parks.value >= len(flooded)

        # the collecting client is under its share: it goes on while the others are parked
        got: list[str] = []
        while len(got) < 20:
            answer = orjson.loads(await collecting.poll(len(got) - 1, 1000))
            got += [str(m["data"]) for m in answer["messages"]]
            assert collecting._room is None
        assert got[:20] == [f"tick {i}" for i in range(20)]

        # now every flooded client collects: all of it, in order, none lost or repeated
        for sock in flooded:
            received: list[int] = []
            while len(received) < MESSAGES:
                answer = orjson.loads(await sock.poll(len(received) - 1, 1000))
                received += [int(str(m["data"])[:5]) for m in answer["messages"]]
            await sock.poll(len(received) - 1, 0)
            assert received == list(range(MESSAGES))
        await collecting.poll(collecting.outbound.last_seq, 0)
        assert budget.held == collecting.outbound.unacked_bytes
        assert budget.parked == 0 and all(s._room is None for s in flooded)
        everyone = [*flooded, collecting]
        for sock in everyone:
            sock.close_upstream(1000, "")
        await wait_for(lambda: all(s.state is SocketState.CLOSED for s in everyone))
        assert budget.held == sum(s.outbound.unacked_bytes for s in everyone) > 0  # the close messages
        for sock in everyone:
            await sock.poll(sock.outbound.last_seq, 0)  # the client acknowledges its close: freed
        assert all(s.state is SocketState.FREED for s in everyone) and budget.held == 0


def _request(rid: str, port: int) -> EstablishRequest:
    return EstablishRequest(id=rid, socket=rid.ljust(32, "s"), target=f"ws://127.0.0.1:{port}/", protocols=[],
                            expires_at_ms=int(time.time() * 1000) + 10_000, token_id="tok", addresses=[], meta={})


async def test_a_socket_parked_by_its_own_bound_and_acked_below_it_reads_again_on_relief() -> None:
    """Parked at its own bound before the budget was reached; its client then acknowledges below
    that bound but not below its share while the budget is still reached: the relief wakes it."""
    async with quiet_target() as url:
        table, own = await open_socket(url, buffer_budget_bytes=400_000, capacity=10, buffer_high_bytes=200_000,
                                       idle_timeout_s=3600.0)
        hog = await table.open(_request("hog", int(url.rsplit(":", 1)[1].rstrip("/"))),
                               table.ledger.take("hog", "tok"))
        budget = table.budget
        while not own.upstream_message("x" * 5000):  # what its upstream hands it until it answers "full"
            pass
        assert own._room is not None and budget.held < budget.budget  # its own bound, not the budget
        while budget.held < 600_000:
            hog.upstream_message("y" * 5000)
        own.acknowledge(own.outbound.next_seq - 20)  # about 100 kB left: below 200 kB, above the share
        assert own._room is not None and budget.parked == 1  # held by the budget now (the hog by its own bound)
        hog.acknowledge(hog.outbound.last_seq)  # the hog's client collects: relief
        assert budget.held < budget.resume_below
        assert own._room is None and hog._room is None and budget.parked == 0
        for sock in (own, hog):
            sock.close_upstream(1000, "")


async def test_a_closing_socket_drops_what_is_over_its_share_while_the_budget_is_reached() -> None:
    async with quiet_target() as url:
        table, hog = await open_socket(url, buffer_budget_bytes=400_000, capacity=10, idle_timeout_s=3600.0)
        closing = await table.open(_request("closing", int(url.rsplit(":", 1)[1].rstrip("/"))),
                                   table.ledger.take("closing", "tok"))
        budget = table.budget
        while budget.held < 500_000:
            hog.upstream_message("y" * 5000)
        closing.close_upstream(1000, "")
        assert closing.state is SocketState.CLOSING
        for _ in range(100):  # 500 kB from its target after the close started: half of its own bound
            closing.upstream_message("z" * 5000)
        assert budget.share <= closing.outbound.unacked_bytes < budget.share + 5100  # the rest dropped
        assert budget.held == hog.outbound.unacked_bytes + closing.outbound.unacked_bytes
        hog.close_upstream(1000, "")


@contextlib.asynccontextmanager
async def quiet_target() -> AsyncIterator[str]:
    """A target that sends nothing: the tests hand the sockets their messages as their upstream does."""
    port = free_port()

    async def handler(conn: ServerConnection) -> None:
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", port):
        yield f"ws://127.0.0.1:{port}/"
