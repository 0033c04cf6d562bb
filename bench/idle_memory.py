"""Where the bytes of an idle relayed socket go: tracemalloc over an in-process relay.

The relay's socket table, endpoints and HTTP protocol run in this process (on uvloop, as
``polysocket relay`` does); the ``polysocket echo`` target and the polling clients run in child
processes, so their allocations are not counted. After a warm-up batch (first-use caches, pools),
N more sockets are opened straight through the table, each with one poll waiting (a heartbeat every
``--poll-ttl``) and the keepalive sweep running; after ``--settle`` seconds the allocations made
since the warm-up are grouped by source line and divided by N.

tracemalloc sees what Python allocates (objects, buffers from PyMem), not the kernel's socket
buffers, libuv's own allocations or allocator fragmentation: the RSS per idle socket comes from
``python -m bench --idle`` (bench/results/idle-memory.md). Run from the repository root:

    PYTHONPATH=$PWD python -m bench.idle_memory --sockets 2000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import orjson

from polysocket_cli.processes import free_port, wait_port

CLIENT_CONCURRENCY = 64


# the polling clients (a child process)

async def poll_forever(port: int, sid: str, ttl: int, ready: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ack, first = -1, True
    while True:
        writer.write(f"GET /poll?socket={sid}&ack={ack}&ttl={ttl} HTTP/1.1\r\nHost: relay\r\n\r\n".encode())
        if first:
            ready[0] += 1
            first = False
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        answer = orjson.loads(await reader.readexactly(length))
        for msg in answer.get("messages", []):
            ack = max(ack, int(msg.get("seq", ack)))


async def run_clients(port: int, ids: list[str], ttl: int) -> None:
    ready = [0]
    tasks = [asyncio.create_task(poll_forever(port, sid, ttl, ready)) for sid in ids]
    while ready[0] < len(ids):
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    await asyncio.gather(*tasks)


# the relay (this process)

def top_sites(diff: list[tracemalloc.StatisticDiff], n: int, k: int) -> list[str]:
    lines = []
    for stat in diff[:k]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        parts = [p for p in Path(frame.filename).parts if p in ("asyncio", "websockets", "relay_node",
                                                                 "polysocket_core", "uvloop", "httptools")]
        if parts:
            where = f"{parts[-1]}/{where}"
        lines.append(f"| {where} | {stat.size_diff / n:,.0f} | {stat.count_diff / n:.2f} |")
    return lines


async def measure(args: argparse.Namespace, echo_port: int) -> None:
    from polysocket_core.control import EstablishRequest
    from relay_node.edge.endpoints import CONSTANT_HEADERS, RelayEndpoints
    from relay_node.edge.http1 import Connections, Limits, RelayHTTPProtocol, register_constant_headers
    from relay_node.metrics import RelayMetrics
    from relay_node.settings import RelayConfig
    from relay_node.sockets.table import SocketTable

    relay_port = free_port()
    clients: list[asyncio.subprocess.Process] = []
    try:
        total = args.sockets + args.warmup
        cfg = RelayConfig(fqdn=f"127.0.0.1:{relay_port}", capacity=total + 10, idle_timeout_s=3600.0)
        metrics = RelayMetrics()
        table = SocketTable(cfg, metrics)
        endpoints = RelayEndpoints(cfg, table, metrics)
        register_constant_headers(*CONSTANT_HEADERS)
        limits, conns = Limits(max_body_bytes=endpoints.max_body), Connections()
        server = await asyncio.get_running_loop().create_server(
            lambda: RelayHTTPProtocol(endpoints.answer, limits, conns), "127.0.0.1", relay_port, backlog=4096)
        sweeper = asyncio.create_task(table.run_sweeper())
        target = f"ws://127.0.0.1:{echo_port}/"

        async def open_batch(k: int) -> None:
            ids = [secrets.token_hex(16) for _ in range(k)]
            sem = asyncio.Semaphore(CLIENT_CONCURRENCY)

            async def one(sid: str) -> None:
                async with sem:
                    req = EstablishRequest(id=sid, socket=sid, target=target, protocols=[],
                                           expires_at_ms=int(time.time() * 1000) + 60_000,
                                           addresses=["127.0.0.1"])
                    sock = await table.open(req, table.ledger.take(req.id, req.token_id))
                    # Claimed now: the client process polls it only once the whole batch is open,
                    # which for a large batch could come after its claim deadline.
                    sock.claim()

            await asyncio.gather(*(one(s) for s in ids))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", str(relay_port), "--poll-ttl", str(args.poll_ttl),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            clients.append(proc)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("\n".join(ids).encode())
            proc.stdin.close()
            line = await proc.stdout.readline()
            assert line.strip() == b"ready", line
            await asyncio.sleep(args.poll_ttl / 1000 + 1)  # every poll has been answered and re-sent once

        tracemalloc.start(args.frames)
        await open_batch(args.warmup)
        gc.collect()
        types_before = Counter(type(o).__qualname__ for o in gc.get_objects())
        before = tracemalloc.take_snapshot()
        t0 = time.monotonic()
        await open_batch(args.sockets)
        opened = time.monotonic() - t0
        await asyncio.sleep(args.settle)
        gc.collect()
        after = tracemalloc.take_snapshot()
        types_after = Counter(type(o).__qualname__ for o in gc.get_objects())
        n = args.sockets
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        before, after = before.filter_traces(filters), after.filter_traces(filters)
        by_line = after.compare_to(before, "lineno")
        by_file = after.compare_to(before, "filename")
        grown = sum(s.size_diff for s in by_line)
        out = [f"{n} idle sockets (+{args.warmup} warm-up), poll ttl {args.poll_ttl} ms, settled "
               f"{args.settle:g} s, open {opened:.1f} s; {len(table)} in the table",
               "", f"Python allocations per idle socket: **{grown / n:,.0f} B** ({grown / n / 1024:.2f} KiB)", "",
               "| allocated at | bytes / socket | blocks / socket |", "|---|---:|---:|",
               *top_sites(by_line, n, args.top), "",
               "| file | bytes / socket |", "|---|---:|"]
        for stat in by_file[:12]:
            out.append(f"| {Path(stat.traceback[0].filename).name} | {stat.size_diff / n:,.0f} |")
        out += ["", "| objects (gc-tracked) | per socket |", "|---|---:|"]
        grown_types = Counter({t: c for t, c in (types_after - types_before).items() if c >= n // 2})
        for name, count in grown_types.most_common(15):
            out.append(f"| {name} | {count / n:.2f} |")
        print("\n".join(out))
        sweeper.cancel()
        server.close()
        table.abort_all()
    finally:
        for proc in clients:
            proc.terminate()
            await proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sockets", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--poll-ttl", type=int, default=5000, help="ms a poll waits: the heartbeat period")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds after the last socket's first heartbeat")
    ap.add_argument("--frames", type=int, default=1, help="traceback depth tracemalloc keeps")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)  # ids on stdin
    args = ap.parse_args()
    if args.client:
        asyncio.run(run_clients(args.client, sys.stdin.read().split(), args.poll_ttl))
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * (args.sockets + args.warmup) + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # children inherit it
    import uvloop

    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-m", "polysocket_cli", "echo", "--port", str(echo_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(echo_port)
        uvloop.run(measure(args, echo_port))
    finally:
        echo.terminate()
        echo.wait(10)


if __name__ == "__main__":
    main()
