"""One RelaySocket in-process against a real WebSocket target: its states, its close codes, its
reservation, and what a retried send is answered once the socket is closing (issue 10)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.server import ServerConnection, serve

from polysocket_cli.processes import free_port
from polysocket_core.control import EstablishRequest
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.lifecycle import CLOSED_LINGER_S, CloseCause, SocketState
from polysocket_core.reservations import TokenLedger
from polysocket_core.wire import SendParams
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets.receivers import PollReceiver
from relay_node.sockets.socket import RelaySocket
from relay_node.sockets.table import SocketTable


@dataclass
class Target:
    url: str
    received: list[str | bytes] = field(default_factory=list)
    conns: list[ServerConnection] = field(default_factory=list)


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    port = free_port()
    t = Target(f"ws://127.0.0.1:{port}/")

    async def handler(conn: ServerConnection) -> None:
        t.conns.append(conn)
        async for msg in conn:
            t.received.append(msg)

    async with serve(handler, "127.0.0.1", port):
        yield t


async def open_socket(target: Target, expires_in_ms: int = 10_000, **cfg: object) -> tuple[SocketTable, RelaySocket]:
    table = SocketTable(RelayConfig(fqdn="n.localhost", **cfg), RelayMetrics())  # type: ignore[arg-type]
    req = EstablishRequest(id="req-1", socket="s" * 32, target=target.url, protocols=[],
                           expires_at_ms=int(time.time() * 1000) + expires_in_ms, token_id="tok")
    sock = await table.open(req, table.ledger.take(req.id, req.token_id))
    return table, sock


def send(seq: int, data: bytes = b"x") -> SendParams:
    return SendParams(socket="s" * 32, seq=seq, kind="t", fin=True, data=data)


async def wait_for(cond: object, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.01)
    assert cond(), "condition not reached"  # type: ignore[operator]


async def test_retry_of_a_send_refused_as_too_big_is_not_acknowledged(target: Target) -> None:
    _, sock = await open_socket(target, max_message_bytes=100)
    await sock.send(send(0, b"ok"))
    with pytest.raises(PolysocketError) as first:
        await sock.send(send(1, b"y" * 200))
    assert first.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    with pytest.raises(PolysocketError) as retry:  # was answered ok: never sent
        await sock.send(send(1, b"y" * 200))
    assert retry.value.code is ErrorCode.SOCKET_CLOSED
    await sock.send(send(0, b"ok"))  # a retry of a send that did reach the target is still ok
    await wait_for(lambda: sock.state is SocketState.CLOSED)
    assert target.received == ["ok"]


async def test_retry_after_socket_closed_is_not_acknowledged(target: Target) -> None:
    """A send accepted in order but still waiting to be written when the upstream goes away gets
    ``socket_closed``; its retry must get the same answer, not ``ok``."""
    _, sock = await open_socket(target)
    await sock.send(send(0, b"first"))
    await wait_for(lambda: target.received == ["first"])
    lock = sock._lock()  # (an uncontended send writes without it: the lock exists once one waits)
    await lock.acquire()  # a write in progress: the next send waits behind it
    pending = asyncio.create_task(sock.send(send(1, b"second")))
    await asyncio.sleep(0.05)
    await target.conns[0].close(4001, "target leaves")
    await wait_for(lambda: sock.state is SocketState.CLOSED)
    lock.release()
    with pytest.raises(PolysocketError) as first:
        await pending
    assert first.value.code is ErrorCode.SOCKET_CLOSED
    with pytest.raises(PolysocketError) as retry:
        await sock.send(send(1, b"second"))
    assert retry.value.code is ErrorCode.SOCKET_CLOSED
    await sock.send(send(0, b"first"))  # sent before the close: its retry is acknowledged
    assert target.received == ["first"]
    answer = await sock.poll(-1, 0)
    assert b'"code":4001' in answer and b"target leaves" in answer


async def test_kill_imposes_1008_and_freeing_releases_the_reservation(target: Target) -> None:
    table, sock = await open_socket(target)
    assert table.ledger.counts() == {"tok": 1} and sock.token_id == "tok"
    assert table.kill_token("tok", "revoked " + "x" * 300) == 1
    await wait_for(lambda: sock.state is SocketState.CLOSED)
    answer = await sock.poll(-1, 0)
    assert b'"type":"close","code":1008' in answer
    assert table.ledger.counts() == {"tok": 1}  # kept until the client has the close
    await sock.poll(0, 0)  # acks the close
    assert sock.state is SocketState.FREED and len(table) == 0 and table.ledger.counts() == {}
    await wait_for(lambda: target.conns[0].close_code == 1008)
    assert len((target.conns[0].close_reason or "").encode()) <= 123


async def test_sweep_frees_an_uncollected_close_and_says_so(target: Target,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """D11: a socket freed after the close linger was logged as 'idle for 60s'."""
    table, sock = await open_socket(target)
    sock.close_upstream(1000, "bye")
    await wait_for(lambda: sock.state is SocketState.CLOSED)
    with caplog.at_level(logging.INFO, logger="polysocket.relay"):
        table.sweep(time.monotonic() + CLOSED_LINGER_S + 1)
    assert sock.state is SocketState.FREED and table.ledger.counts() == {}
    assert "not collected" in caplog.text and "idle" not in caplog.text


async def test_idle_socket_is_closed_1001_and_freed_at_once(target: Target,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    table, sock = await open_socket(target, idle_timeout_s=5.0)
    table.get(sock.id)  # its browser named it once (else it would be an unclaimed one), then went silent
    with caplog.at_level(logging.INFO, logger="polysocket.relay"):
        table.sweep(time.monotonic() + 6)
    assert sock.state is SocketState.FREED and len(table) == 0 and table.ledger.counts() == {}
    assert "idle for 6s" in caplog.text
    await wait_for(lambda: target.conns[0].close_code == 1001)


async def test_the_sweep_visits_a_socket_only_when_one_of_its_checks_is_due(target: Target) -> None:
    """The due queue (relay_node/sockets/deadlines.py): a quiet socket is looked at when its ping is
    due, not every second."""
    table, sock = await open_socket(target, ping_interval_s=20.0, idle_timeout_s=60.0)
    table.get(sock.id)  # claimed: the claim deadline no longer counts
    checks = table.metrics.socket_checks  # counts the sockets the sweep checks
    t0 = sock.last_seen
    for second in range(1, 20):
        table.sweep(t0 + second)
    assert checks.value == 0 and not sock.conn._ping_sent
    table.sweep(t0 + 20.01)
    assert checks.value == 1 and sock.conn._ping_sent  # the ping went out on time


async def test_a_send_gap_is_failed_at_its_hold_though_nothing_else_is_due(target: Target) -> None:
    """A gap opens between the sweep's looks: the hold (10 s) ends before the next ping (20 s) or
    the idle timeout, and the sweep must look then (``look_by``)."""
    table, sock = await open_socket(target, gap_hold_s=10.0, ping_interval_s=20.0)
    table.get(sock.id)
    await sock.send(send(1))  # send 0 never comes
    assert sock.inbound.gap_since is not None
    table.sweep(sock.inbound.gap_since + 9.9)
    assert sock.state is SocketState.OPEN
    table.sweep(sock.inbound.gap_since + 10.01)
    assert sock.state is SocketState.CLOSING
    await wait_for(lambda: target.conns[0].close_code == 1011)


async def test_a_socket_its_receiver_kept_past_the_idle_timeout_is_freed_at_the_next_sweep_after(
        target: Target) -> None:
    """Overdue but spared by a waiting receiver: looked at every sweep until the receiver goes."""
    table, sock = await open_socket(target, idle_timeout_s=5.0, ping_interval_s=None)
    table.get(sock.id)
    receiver = PollReceiver(asyncio.get_running_loop().create_future())  # as a waiting poll or stream
    sock.take_receiver(receiver, None)
    t0 = sock.last_seen
    table.sweep(t0 + 6)
    table.sweep(t0 + 7)
    assert sock.state is SocketState.OPEN
    sock.release_receiver(receiver)  # (a stream ending leaves last_seen where it was)
    table.sweep(t0 + 8)
    assert sock.state is SocketState.FREED


async def test_abandoned_socket_frees_and_parked_reader_is_released(target: Target) -> None:
    table, sock = await open_socket(target, buffer_high_bytes=1)
    await target.conns[0].send("fills the buffer")
    await wait_for(lambda: sock._room is not None)  # the reader waits for acks
    sock.close(CloseCause.ABANDONED)
    assert sock.state is SocketState.FREED and sock._room is None and table.ledger.counts() == {}
    await wait_for(lambda: sock.conn.lost)


async def test_an_unclaimed_socket_is_closed_and_its_reservation_released_at_its_claim_deadline(
        target: Target) -> None:
    """Its router died between the pick and its answer: no browser will ever name it. The clock is
    passed to the sweep: no sleeping to the deadline."""
    before = time.monotonic()
    table, sock = await open_socket(target, expires_in_ms=2_000, open_timeout_s=3.0)
    after = time.monotonic()
    assert sock.claim_by is not None
    # the request's expiry (2 s) plus the claim margin (--open-timeout, 3 s), from the open
    assert before + 4.9 <= sock.claim_by <= after + 5.1
    table.sweep(now=sock.claim_by)  # not yet past it
    assert sock.state is SocketState.OPEN and table.ledger.counts() == {"tok": 1}
    table.sweep(now=sock.claim_by + 0.01)
    assert sock.state is SocketState.FREED and len(table) == 0 and table.ledger.counts() == {}
    await wait_for(lambda: sock.conn.lost)  # the target is let go too (1001, then the connection ends)
    assert target.conns[0].close_code == 1001


@pytest.mark.parametrize("request_kind", ["poll", "send", "close"])
async def test_the_first_client_request_naming_the_socket_claims_it(target: Target, request_kind: str) -> None:
    table, sock = await open_socket(target, expires_in_ms=0, open_timeout_s=1.0)
    deadline = sock.claim_by
    assert deadline is not None
    claimed = table.get(sock.id)  # every endpoint finds its socket here: a poll, stream, send or close
    if request_kind == "poll":
        await claimed.poll(-1, 0)
    elif request_kind == "send":
        await claimed.send(send(0))
    else:
        claimed.close_upstream(1000, "")
    assert sock.claim_by is None
    table.sweep(now=deadline + 0.01)  # past the claim deadline, long before the idle timeout or a linger
    assert sock.state is not SocketState.FREED and table.ledger.counts() == {"tok": 1}


async def test_open_failure_releases_the_reservation() -> None:
    table = SocketTable(RelayConfig(fqdn="n.localhost"), RelayMetrics())
    req = EstablishRequest(id="r", socket="s" * 32, target=f"ws://127.0.0.1:{free_port()}/", protocols=[],
                           expires_at_ms=0, token_id="tok")
    res = table.ledger.take(req.id, req.token_id)
    with pytest.raises(PolysocketError) as exc:
        await table.open(req, res)
    assert exc.value.code is ErrorCode.UPSTREAM_FAILED
    assert res.released and table.ledger.counts() == {}
    assert table.ledger.begin_settle() == [("tok", "r")]


def test_ledger_is_the_tables() -> None:
    assert isinstance(SocketTable(RelayConfig(fqdn="n"), RelayMetrics()).ledger, TokenLedger)


