"""The connect path: ``GET /connect`` through a real router (uvicorn), Valkey, relay and echo target.

    python -m bench.connect                          # 300 connects at concurrency 1 and 16, token admission
    python -m bench.connect --connects 500 --out bench/results/connect.md --label "commit abc1234"
    python -m bench.connect --profile /tmp/router.txt   # py-spy samples of the router during the c=16 phase
    python -m bench.connect --profile /tmp/relay.txt --profile-of relay   # the same of the relay
    git archive c780424 | tar -x -C /tmp/before && python -m bench.connect --compare /tmp/before
    python -m bench.connect --compare . --compare-python /other/venv/bin/python   # the same tree, another install

Reports, per concurrency, p50 / p90 / p99 of the connect (request sent until the router's answer,
which comes after the relay opened the upstream WebSocket) and the router's CPU per connect (user +
system of its process, /proc, over the phase), with the relay's and Valkey's beside it: at
concurrency 16 a connect waits for whichever of them holds a core. Each phase is repeated
``--rounds`` times and the round with the median router CPU is shown. ``--compare DIR`` runs a
second stack from another tree (``python -m polysocket_cli`` started in it, so its own router,
relay and core) and alternates the two trees' rounds in a random order, so both see the same
machine load. The load generator is a raw keep-alive HTTP client (bench/http1.py), one connection
per concurrent caller, so it costs little beside the servers.

Admission is the token admission a deployment runs (token lookup, rate limits, SSRF guard), so the
numbers include its Redis round trips; ``--admission open`` measures the path without it (what
``python -m bench`` uses). Opened sockets are left to the relay (it has capacity for them) and go
with the stack at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from bench.http1 import HttpConn
from bench.procstat import cpu_seconds
from polysocket_cli.processes import Stack

REPO_ROOT = Path(__file__).resolve().parent.parent
QUIET = {"POLYSOCKET_LOG_LEVEL": "warning"}
CONCURRENCIES = (1, 16)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def connect_phase(router_port: int, query: bytes, n: int, concurrency: int) -> list[float]:
    """``n`` connects spread over ``concurrency`` keep-alive connections; their latencies in seconds."""
    conns = [await HttpConn.open(router_port, f"127.0.0.1:{router_port}") for _ in range(concurrency)]
    latencies: list[float] = []
    left = n

    async def caller(conn: HttpConn) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            status, body = await conn.get(query)
            latencies.append(time.perf_counter() - t0)
            answer = orjson.loads(body)
            if status != 200 or not answer.get("ok"):
                raise RuntimeError(f"connect failed ({status}): {answer}")

    try:
        await asyncio.gather(*(caller(c) for c in conns))
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.close()
    return latencies


def start_profiler(pid: int, out: str) -> subprocess.Popen[bytes]:
    pyspy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(pyspy), "record", "-p", str(pid), "-r", "500", "-f", "raw", "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    profiler.wait(timeout=30)


@dataclass
class Side:
    """One tree's stack: its router's port, the query that connects through it, the pids counted."""

    label: str
    port: int
    query: bytes
    pids: dict[str, int]
    rounds: dict[int, list[dict[str, float]]] = field(default_factory=dict)


async def one_round(args: argparse.Namespace, side: Side, conc: int) -> None:
    profiler = None
    if args.profile and conc == max(CONCURRENCIES) and side.label == "this checkout":
        profiler = start_profiler(side.pids[args.profile_of], args.profile)
        await asyncio.sleep(0.5)
    cpu0 = {name: cpu_seconds(pid) for name, pid in side.pids.items()}
    lat = await connect_phase(side.port, side.query, args.connects, conc)
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in side.pids.items()}
    if profiler is not None:
        stop_profiler(profiler)
    side.rounds.setdefault(conc, []).append({
        "p50_ms": percentile(lat, 0.5) * 1e3, "p90_ms": percentile(lat, 0.9) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3, **{f"{name}_cpu_ms": cpu[name] / len(lat) * 1e3 for name in cpu}})


async def measure(args: argparse.Namespace, sides: list[Side]) -> dict[str, Any]:
    for side in sides:  # warm: the Redis pool, the script cache, the code paths
        await connect_phase(side.port, side.query, 50, 4)
    for conc in CONCURRENCIES:
        for _ in range(args.rounds):
            for side in random.sample(sides, len(sides)):  # interleaved, no fixed order
                await one_round(args, side, conc)
    out: dict[str, Any] = {}
    for side in sides:
        for conc, rounds in side.rounds.items():
            ordered = sorted(rounds, key=lambda r: r["router_cpu_ms"])
            out.setdefault(side.label, {})[f"c{conc}"] = {
                **ordered[len(ordered) // 2],
                "rounds_router_cpu_ms": [r["router_cpu_ms"] for r in rounds],
                "rounds_p50_ms": [r["p50_ms"] for r in rounds]}
    return out


def start_side(args: argparse.Namespace, label: str, tree: Path, python: str = sys.executable) -> tuple[Stack, Side]:
    """Valkey, echo, relay and router of ``tree`` (``python -m polysocket_cli`` run from it)."""
    stack = Stack(cwd=tree, python=python)
    try:
        valkey = stack.start_valkey()
        echo = stack.start_echo()
        relay = stack.start_relay("bench1", extra=["--capacity", "50000", "--drain-grace", "0"], env=QUIET)
        env = dict(QUIET)
        if args.admission == "open":
            env["POLYSOCKET_ADMISSION"] = "open"
        # limits that count (their Redis round trip is part of the path) but do not refuse
        env |= {"POLYSOCKET_RATE_PER_IP": "100000000/60", "POLYSOCKET_RATE_PER_TOKEN": "100000000/60"}
        router = stack.start_router(env=env)
        target = f"ws://127.0.0.1:{echo.port}/"
        q = f"/connect?from=polysocket-bench&target={quote(target, safe='')}"
        if args.admission == "token":
            q += "&token=" + quote(stack.create_token(max_sockets=1_000_000))
    except BaseException:
        stack.stop()
        raise
    pids = {"router": router.popen.pid, "relay": relay.popen.pid, "valkey": valkey.popen.pid}
    return stack, Side(label, router.port, q.encode(), pids)


def run(args: argparse.Namespace) -> dict[str, Any]:
    trees = {"this checkout": REPO_ROOT, **({f"`{args.compare}`": args.compare.resolve()} if args.compare else {})}
    stacks: list[Stack] = []
    try:
        sides = []
        for label, tree in trees.items():
            python = args.compare_python if label != "this checkout" and args.compare_python else sys.executable
            stack, side = start_side(args, label, tree, python)
            stacks.append(stack)
            sides.append(side)
        return asyncio.run(measure(args, sides))
    finally:
        for stack in stacks:
            stack.stop()


def markdown(args: argparse.Namespace, result: dict[str, Any]) -> str:
    lines = ["| tree | concurrency | connects | p50 ms | p90 ms | p99 ms | router CPU ms / connect | "
             "router CPU per round | relay CPU ms / connect | Valkey CPU ms / connect |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for conc in CONCURRENCIES:
        for label, by_conc in result.items():
            r = by_conc[f"c{conc}"]
            lines.append(f"| {label} | {conc} | {args.connects} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | **{r['router_cpu_ms']:.3f}** | "
                         f"{', '.join(f'{x:.3f}' for x in r['rounds_router_cpu_ms'])} | "
                         f"{r['relay_cpu_ms']:.3f} | {r['valkey_cpu_ms']:.3f} |")
    head = (f"`python -m bench.connect --connects {args.connects} --rounds {args.rounds} --admission "
            f"{args.admission}" + (f" --compare {args.compare}" if args.compare else "") + "`"
            + (f" ({args.label})" if args.label else ""))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "\n".join([head, "", f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load} "
                      "(1, 5, 15 min) at the end.", "", *lines, ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.connect", description=__doc__.split("\n\n")[0])
    ap.add_argument("--connects", type=int, default=300, help="connects per phase")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per concurrency (the median-CPU one is shown)")
    ap.add_argument("--admission", choices=("token", "open"), default="token")
    ap.add_argument("--label", default="", help="a note for the report (e.g. the commit measured)")
    ap.add_argument("--profile", help="py-spy raw output of this checkout's router during the c=16 rounds")
    ap.add_argument("--compare-python", help="the interpreter (its installed packages) that runs the --compare "
                    "tree, e.g. one without hiredis; default: this one")
    ap.add_argument("--profile-of", choices=("router", "relay"), default="router",
                    help="the process --profile samples")
    ap.add_argument("--compare", type=Path, metavar="DIR",
                    help="another tree (e.g. `git archive` of an older commit): its own stack, rounds interleaved")
    ap.add_argument("--out", type=Path, help="append the markdown to this file")
    args = ap.parse_args(argv)
    result = run(args)
    text = markdown(args, result)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write("\n" + text)
    print(orjson.dumps(result).decode(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
