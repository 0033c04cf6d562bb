"""What a refused upstream open leaves for the cycle collector (issue 20, item 4's small leak).

A target answering the WebSocket handshake with HTTP 403, N opens through ``SocketTable.open`` on
uvloop (as the relay runs), the collector off: the bytes traced since the first batch, then what a
``gc.collect()`` finds (``DEBUG_SAVEALL``: every object it would have freed), per open. The target
is a ``websockets`` server in this process; under uvloop its refused connections leave no cycles.

    PYTHONPATH=$PWD python -m bench.refused_open   # (the tree whose relay is measured)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import tracemalloc
from collections import Counter

import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from polysocket_cli.processes import free_port
from polysocket_core.control import EstablishRequest
from polysocket_core.errors import PolysocketError
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets.table import SocketTable


def refuse(conn: ServerConnection, request: Request) -> Response:
    return conn.respond(403, "no\n")


async def idle(conn: ServerConnection) -> None:
    await conn.wait_closed()


async def run(n: int) -> None:
    port = free_port()
    async with serve(idle, "127.0.0.1", port, process_request=refuse):
        table = SocketTable(RelayConfig(fqdn="n.localhost"), RelayMetrics())

        async def one(i: int) -> None:
            req = EstablishRequest(id=f"r{i}", socket=f"{i:032d}", target=f"ws://127.0.0.1:{port}/",
                                   protocols=[], expires_at_ms=0, token_id="tok")
            with contextlib.suppress(PolysocketError):
                await table.open(req, table.ledger.take(req.id, req.token_id))

        for i in range(20):  # warm-up: first-use caches
            await one(i)
        gc.collect()
        gc.disable()
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
        for i in range(n):
            await one(1000 + i)
        for _ in range(20):  # the aborted transports' last callbacks
            await asyncio.sleep(0.01)
        traced = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
        tracemalloc.stop()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kinds = Counter(type(o).__qualname__ for o in gc.garbage)
        found = len(gc.garbage)
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    print(f"per refused open: {traced / n:,.0f} B traced with the collector off; {found / n:.0f} objects left "
          f"for the cycle collector ({', '.join(f'{k} {v // n}' for k, v in kinds.most_common(5)) or 'none'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opens", type=int, default=200)
    args = ap.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(args.opens))


if __name__ == "__main__":
    main()
