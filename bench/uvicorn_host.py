"""The relay hosted by its own server (``relay_node.server``) against uvicorn's (``bench/uvicorn_relay.py``).

Both serve the same ``RelayHTTPProtocol``; what differs is the server around it (uvicorn's import,
its 10-per-second main-loop tick, its shutdown). Three relays per round, each on its own stack
(Valkey, router; one shared echo target): ``own`` and ``own2`` are the same server, so their
difference is the noise of this run, and ``uvicorn``. The order rotates every round. Per relay,
started fresh every round:

* start-up: spawn until ``/healthz`` answers (wall time and the relay's CPU time), and RSS then;
* idle: K keep-alive connections that made one request each, RSS growth per connection, and the
  relay's CPU per second over a window while they idle (``/proc/PID/task/*/schedstat``: ns, not ticks);
* load: for each session count and receive mode (long poll, stream), N sessions each do M closed-loop
  round trips (send 64 bytes, wait for the echo): relay CPU per round trip, RTT p50 / p99;
* stop: SIGTERM until exit (the drain with ``--drain-grace``), and the exit status.

    .venv/bin/python -m bench.uvicorn_host --rounds 5 --out bench/results/uvicorn_host.md

A child mode (``--child own|uvicorn``) runs one relay from ``POLYSOCKET_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

from polysocket_cli.processes import REPO_ROOT, Proc, Stack, free_port
from polysocket_core.settings import resolve, to_env

from .procstat import loadavg, machine_info, memory_kib
from .stream_cpu import Http, open_stream

MODES = ("own", "uvicorn", "own2")  # own2: the same server as own, for the noise between identical relays


def dump_tasks(signum: int, frame: object) -> None:
    """SIGUSR2: print the running loop's tasks and where each waits (a relay that does not stop)."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:
        print("SIGUSR2: no running loop", file=sys.stderr, flush=True)
        return
    for task in tasks:
        print(f"SIGUSR2 task {task!r}", file=sys.stderr, flush=True)
        task.print_stack(file=sys.stderr)


def run_child(mode: str) -> int:
    """One relay from POLYSOCKET_* variables, hosted as ``mode`` says."""
    import logging

    from relay_node.settings import RelayConfig

    logging.basicConfig(level=os.environ.get("POLYSOCKET_LOG_LEVEL", "warning").upper())
    signal.signal(signal.SIGUSR2, dump_tasks)
    config = resolve(RelayConfig, os.environ)
    if mode == "uvicorn":
        from .uvicorn_relay import run_relay_under_uvicorn

        return run_relay_under_uvicorn(config)
    from relay_node.node import run_relay

    run_relay(config)
    return 0


def cpu_ns(pid: int) -> int:
    """Nanoseconds on a CPU, all threads of the process (schedstat: finer than the 10 ms ticks of stat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            continue  # a thread that ended
    return total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Side:
    """One mode's stack: Valkey, router, a token; its relay is started fresh every round."""

    mode: str
    stack: Stack
    token: str
    router: Proc
    log_level: str = "warning"
    relay: Proc | None = None
    results: list[dict[str, float]] = field(default_factory=list)

    def start_relay(self, capacity: int, drain_grace: float) -> tuple[float, float, int]:
        """Spawn the relay, wait until healthy: seconds taken, its CPU ms until then (less
        sensitive to other work on the machine than the wall time), and its RSS (KiB) then."""
        from relay_node.settings import RelayConfig

        port = free_port()
        config = RelayConfig(fqdn=f"n{self.mode}.localhost:{port}", node_id=f"n{self.mode}", capacity=capacity,
                             redis_url=self.stack.redis_url, port=port, drain_grace_s=drain_grace)
        env = {k: v for k, v in to_env(config).items() if v != ""}
        env["POLYSOCKET_LOG_LEVEL"] = self.log_level
        started = time.monotonic()
        child = "uvicorn" if self.mode == "uvicorn" else "own"
        self.relay = self.stack._spawn(f"relay-{self.mode}", [sys.executable, "-m", "bench.uvicorn_host",
                                                              "--child", child], port, env)
        self.stack.wait_healthy(port)
        pid = self.relay.popen.pid
        return time.monotonic() - started, cpu_ns(pid) / 1e6, memory_kib(pid)["rss"]

    def stop_relay(self, limit: float = 30.0) -> tuple[float, int | None]:
        """SIGTERM until exit: seconds and status. Past ``limit`` the relay is hung: its tasks go to its
        log (SIGUSR2), it is killed, and the stop counts as ``limit`` with status -1."""
        assert self.relay is not None
        relay, started = self.relay, time.monotonic()
        self.stack.procs.remove(relay)
        self.relay = None
        relay.signal(signal.SIGTERM)
        try:
            status: int | None = relay.popen.wait(limit)
        except subprocess.TimeoutExpired:
            relay.signal(signal.SIGUSR2)
            time.sleep(1.0)
            relay.popen.kill()
            relay.popen.wait(10)
            print(f"{relay.name} did not stop within {limit:g} s; its tasks: {self.stack.log_dir / relay.name}.log",
                  flush=True)
            return limit, -1
        return time.monotonic() - started, status


async def idle_connections(port: int, k: int) -> list[asyncio.StreamWriter]:
    """K keep-alive connections, each after one answered request (as a client between polls)."""
    writers = []
    for _ in range(k):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        size = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(size)
        writers.append(writer)
    return writers


async def session(port: int, fqdn: str, sid: str, mode: str, m: int, rtts: list[float]) -> None:
    """M closed-loop round trips, receiving by long poll or by stream (as bench.stream_cpu), timed."""
    sender = await Http.open(port, fqdn)
    ack = -1
    if mode == "stream":
        events = await open_stream(port, fqdn, sid, ack)
        for i in range(m):
            t0 = time.perf_counter()
            await sender.get("/send", {"socket": sid, "seq": i, "d": "x" * 64, "ack": ack})
            while True:
                seq = await events.next_seq()
                if seq is None:  # the byte or time budget ended it: resume
                    events = await open_stream(port, fqdn, sid, ack)
                elif seq > ack:
                    ack = seq
                    break
            rtts.append(time.perf_counter() - t0)
        events.http.writer.close()
    else:
        poller = await Http.open(port, fqdn)
        for i in range(m):
            t0 = time.perf_counter()
            await sender.get("/send", {"socket": sid, "seq": i, "d": "x" * 64})
            while True:
                answer = await poller.get("/poll", {"socket": sid, "ack": ack, "ttl": 5000})
                seqs = [msg["seq"] for msg in answer["messages"] if "seq" in msg]
                if seqs and max(seqs) > ack:
                    ack = max(seqs)
                    break
            rtts.append(time.perf_counter() - t0)
        poller.writer.close()
    sender.writer.close()


async def load(http: httpx.AsyncClient, side: Side, target: str, n: int, m: int, mode: str) -> dict[str, float]:
    assert side.relay is not None
    socks = []
    for _ in range(n):
        q = urlencode({"from": "bench", "target": target, "token": side.token})
        answer = (await http.get(f"http://127.0.0.1:{side.router.port}/connect?{q}")).json()
        socks.append((answer["fqdn"], answer["socket"]))
    pid, port = side.relay.popen.pid, side.relay.port
    rtts: list[float] = []
    cpu0 = cpu_ns(pid)
    await asyncio.gather(*(session(port, fqdn, sid, mode, m, rtts) for fqdn, sid in socks))
    cpu = (cpu_ns(pid) - cpu0) / 1e3 / (n * m)
    for _, sid in socks:
        await http.get(f"http://127.0.0.1:{port}/close", params={"socket": sid})
    return {f"{mode}{n} cpu_us": cpu, f"{mode}{n} p50_ms": pct(rtts, 0.5) * 1e3,
            f"{mode}{n} p99_ms": pct(rtts, 0.99) * 1e3}


async def one_round(side: Side, target: str, args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    capacity = 4 * max(args.sessions) + 10
    out["startup_s"], out["startup_cpu_ms"], out["rss_start_kib"] = side.start_relay(capacity, args.drain_grace)
    assert side.relay is not None
    pid = side.relay.popen.pid
    await asyncio.sleep(1.0)  # registered, first heartbeats: the idle baseline
    before = memory_kib(pid)["rss"]
    writers = await idle_connections(side.relay.port, args.idle)
    await asyncio.sleep(0.5)
    out["idle_kib_per_conn"] = (memory_kib(pid)["rss"] - before) / max(1, args.idle)
    cpu0, t0 = cpu_ns(pid), time.monotonic()
    await asyncio.sleep(args.idle_window)
    out["idle_cpu_ms_per_s"] = (cpu_ns(pid) - cpu0) / 1e6 / (time.monotonic() - t0)
    for w in writers:
        w.close()
    async with httpx.AsyncClient(timeout=30) as http:
        for n in args.sessions:
            for mode in ("poll", "stream"):
                out.update(await load(http, side, target, n, args.messages, mode))
    out["stop_s"], status = side.stop_relay()
    out["exit_status"] = float(status if status is not None else -1)
    return out


def make_side(mode: str, log_level: str) -> Side:
    stack = Stack(cwd=REPO_ROOT)  # the relay child runs this module
    try:
        stack.start_valkey()
        quiet = {"POLYSOCKET_LOG_LEVEL": "warning", "POLYSOCKET_RATE_PER_IP": "0/1",
                 "POLYSOCKET_RATE_PER_TOKEN": "0/1"}
        router = stack.start_router(env=quiet)
        return Side(mode, stack, stack.create_token(max_sockets=100_000), router, log_level)
    except BaseException:
        stack.stop()
        raise


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "-"


def report(sides: list[Side], args: argparse.Namespace, load_before: str, load_after: str, took: float) -> str:
    info = machine_info()
    pk = info["packages"]
    assert isinstance(pk, dict)
    keys = list(sides[0].results[0])
    lines = [
        "# The relay under its own server vs under uvicorn's (`python -m bench.uvicorn_host`)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {info['commit']}, {info['cpu']} "
        f"({info['cores']} cores, shared), Python {info['python']}, uvicorn {pk.get('uvicorn')}, "
        f"uvloop {pk.get('uvloop')}, httptools {pk.get('httptools')}. Load average before / after: "
        f"{load_before} / {load_after}; {took:.0f} s.",
        "",
        f"Options: {args.rounds} rounds (order rotated), {args.idle} idle connections, {args.idle_window:g} s "
        f"idle window, sessions {args.sessions} x {args.messages} round trips per receive mode, drain grace "
        f"{args.drain_grace:g} s. `own` and `own2` are the same server (`relay_node.server`): their gap is "
        "this run's noise; `uvicorn` is `bench/uvicorn_relay.py`.",
        "",
        "Medians over rounds (all rounds below):",
        "",
        "| measure | own | uvicorn | own2 | uvicorn / own | own2 / own |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    by_mode = {s.mode: s for s in sides}
    for key in keys:
        med = {m: statistics.median(r[key] for r in by_mode[m].results) for m in MODES}
        lines.append(f"| {key} | {med['own']:.3f} | {med['uvicorn']:.3f} | {med['own2']:.3f} | "
                     f"{ratio(med['uvicorn'], med['own'])} | {ratio(med['own2'], med['own'])} |")
    failed = {m: sum(r["exit_status"] != 0 for r in by_mode[m].results) for m in MODES}
    lines += ["", "Stops that did not end with exit status 0 within 30 s of SIGTERM (killed, status -1): "
              + ", ".join(f"{m} {failed[m]} of {args.rounds}" for m in MODES) + "."]
    lines += ["", "All rounds (own / uvicorn / own2):", "", "| measure | " +
              " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
              "|---|" + "---:|" * args.rounds]
    for key in keys:
        cells = [" / ".join(f"{by_mode[m].results[i][key]:.2f}" for m in MODES) for i in range(args.rounds)]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> str:
    load_before, started = loadavg(), time.monotonic()
    sides: list[Side] = []
    try:
        for mode in args.modes:
            sides.append(make_side(mode, args.child_log_level))
        echo = sides[0].stack.start_echo()
        target = f"ws://127.0.0.1:{echo.port}/"
        for r in range(args.rounds):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            for side in order:
                result = await one_round(side, target, args)
                side.results.append(result)
                print(f"round {r + 1} {side.mode:<7} " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()),
                      flush=True)
    finally:
        for side in sides:
            side.stack.stop()
    if [s.mode for s in sides] != list(MODES):
        return ""
    return report(sides, args, load_before, loadavg(), time.monotonic() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=("own", "uvicorn"), help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100])
    ap.add_argument("--messages", type=int, default=200, help="round trips per session and receive mode")
    ap.add_argument("--idle", type=int, default=1000, help="idle keep-alive connections")
    ap.add_argument("--idle-window", type=float, default=5.0, help="seconds of idle CPU measured")
    ap.add_argument("--drain-grace", type=float, default=0.5)
    ap.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES),
                    help="a subset of own,uvicorn,own2 (the report needs all three)")
    ap.add_argument("--child-log-level", default="warning",
                    help="the relays' log level (their logs: the stack's log_dir)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = ap.parse_args()
    if args.child:
        raise SystemExit(run_child(args.child))
    text = asyncio.run(run(args))
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
