"""The relay's sweep CPU for idle sockets: every socket every second against only the due ones.

Issue 20 asks that the idle CPU per socket follow the sockets that are due. This runs the table's
sweep, in one process and without sockets (``bench.relay_path``'s counting transports under real
``Upstream`` / ``RelaySocket`` objects), on a clock it moves by hand: N idle sockets, each polled
once per ``--poll-every`` seconds (what a waiting client's heartbeat does to ``last_seen``), pinged
by the keepalive every ``--ping-interval`` and answering the ping at once. Every simulated second
both sweeps run, each on its own table (built alike, each sending its own pings):

* ``every socket``: the checks on every socket (what ``SocketTable.sweep`` did before the due
  queue: ``SocketTable._check`` over ``table.sockets``);
* ``due only``: ``SocketTable.sweep``, which visits the sockets ``relay_node.sockets.deadlines``
  says are due.

Only the sweep calls are timed (``time.process_time``).

    PYTHONPATH=$PWD python -m bench.idle_sweep --sockets 1000,10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from polysocket_core.ids import new_socket_id
from polysocket_core.lifecycle import SocketState
from polysocket_core.reservations import Reservation
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets.socket import RelaySocket
from relay_node.sockets.table import SocketTable
from relay_node.sockets.upstream import Upstream

from .relay_path import CountingTransport

PONG = Frame(Opcode.PONG, b"").serialize(mask=False)


def build(n: int, ping_interval: float, now: float) -> SocketTable:
    config = RelayConfig(node_id="bench", fqdn="n1.localhost:1", ping_interval_s=ping_interval,
                         ping_timeout_s=ping_interval)
    table = SocketTable(config, RelayMetrics())
    for i in range(n):
        proto = ClientProtocol(parse_uri("ws://target/"), state=State.OPEN, max_size=config.max_message_bytes)
        up = Upstream(proto, config.close_timeout_s)
        up.connection_made(CountingTransport())  # type: ignore[arg-type]
        sid = new_socket_id()
        sock = RelaySocket(sid, up, config, table.metrics, table._drop, Reservation(table.ledger, f"r{i}", ""),
                           look_by=table.due.schedule)
        sock.last_seen = now - (i % 1000) / 1000 * config.idle_timeout_s / 4  # staggered, as real clients are
        up._next_ping = now + (i % 997) / 997 * ping_interval
        table.sockets[sid] = sock
        table.due.schedule(sid, sock.next_due(now))
    return table


def run(n: int, seconds: int, poll_every: float, ping_interval: float) -> tuple[float, float, int]:
    """CPU seconds of the every-socket sweeps and of the due-only sweeps over ``seconds``
    simulated seconds (two tables built alike, one per way, each sending its own pings), and the
    visits the due-only sweeps made."""
    now = time.monotonic()
    every_table, due_table = build(n, ping_interval, now), build(n, ping_interval, now)
    every = due = 0.0
    visits = 0
    limit = every_table.config.ping_timeout_s
    for tick in range(1, seconds + 1):
        now += 1.0
        for table in (every_table, due_table):  # the clients' heartbeats: each socket polled once per poll_every
            for i, sock in enumerate(table.sockets.values()):
                if (tick + i) % int(poll_every) == 0:
                    sock.last_seen = now
        pending = due_table.due.pop_due(now)  # what the sweep will pop, counted (untimed), then put back
        visits += len(pending)
        for sid in pending:
            due_table.due.schedule(sid, now)
        started = time.process_time()
        due_table.sweep(now)
        due += time.process_time() - started
        started = time.process_time()
        for sock in list(every_table.sockets.values()):
            every_table._check(sock, now, limit)
        every += time.process_time() - started
        for table in (every_table, due_table):  # the target answers every ping at once
            for sock in table.sockets.values():
                if sock.conn._ping_sent:
                    sock.conn.data_received(PONG)
    for table in (every_table, due_table):
        assert all(s.state is SocketState.OPEN for s in table.sockets.values()), "an idle socket was closed"
        assert len(table) == n
    return every, due, visits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sockets", default="1000,10000")
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--poll-every", type=float, default=25.0)
    ap.add_argument("--ping-interval", type=float, default=20.0)
    args = ap.parse_args()
    gc.disable()  # the sweeps allocate little; a collection would land on one side at random
    print("| sockets | every socket, µs per socket per minute | due only | due / every "
          "| visits per socket per minute |")
    print("|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sockets.split(",")):
        every, due, visits = asyncio.run(_run(n, args.seconds, args.poll_every, args.ping_interval))
        scale = 60 / args.seconds / n * 1e6
        print(f"| {n:,} | {every * scale:.1f} | {due * scale:.1f} | {due / every:.2f} "
              f"| {visits * 60 / args.seconds / n:.2f} |")


async def _run(n: int, seconds: int, poll_every: float, ping_interval: float) -> tuple[float, float, int]:
    return run(n, seconds, poll_every, ping_interval)  # in a loop: the upstream's timers want one


if __name__ == "__main__":
    main()
