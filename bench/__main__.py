"""``python -m bench``: polysocket against its baselines, in one run, on loopback.

Starts Valkey, a router, one relay node, the ``polysocket echo`` target and a python-socketio
server as real processes (``polysocket_cli.processes.Stack``), then drives them from this process
on uvloop. See bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from polysocket_cli.processes import REPO_ROOT, Proc, Stack, free_port

from . import report
from .clients import DirectSession, PolysocketSession, Recorder, Session, SocketIOSession
from .http1 import HttpConn
from .procstat import cpu_seconds, loadavg, machine_info, memory_kib

SYSTEMS = ("polysocket", "direct", "socketio")
# "polysocket-lean" (the A/B candidate of relay-ab.md) is gone: its HTTP protocol and GC threshold
# are the relay's only configuration now, so it measured the same code as "polysocket".
DEFAULT_SYSTEMS = SYSTEMS
POLYSOCKETS = ("polysocket",)
# The server processes whose CPU each system is charged with (and the ones only reported).
SERVER_PROCS = {"polysocket": ("relay", "target"),
                "direct": ("target",), "socketio": ("socketio",)}
SIDE_PROCS = {"polysocket": ("router", "valkey"),
              "direct": (), "socketio": ()}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def latency_summary(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"n": len(s), "p50_ms": percentile(s, 0.5) * 1e3, "p90_ms": percentile(s, 0.9) * 1e3,
            "p99_ms": percentile(s, 0.99) * 1e3, "max_ms": (s[-1] * 1e3) if s else float("nan")}


def raise_fd_limit(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Bench:
    def __init__(self, args: argparse.Namespace, procs: dict[str, Proc]) -> None:
        self.args = args
        self.procs = procs
        self.target = f"ws://127.0.0.1:{procs['target'].port}/"
        self.router_port = {s: procs[SIDE_PROCS[s][0]].port for s in POLYSOCKETS if SIDE_PROCS[s][0] in procs}
        self.results: dict[str, Any] = {"load": [], "idle": [], "router": {}}

    def pids(self, names: tuple[str, ...]) -> dict[str, int]:
        return {n: self.procs[n].popen.pid for n in names if n in self.procs}

    # opening and closing sessions

    async def open_sessions(self, system: str, n: int, poll_ttl_ms: int = 25_000,
                            concurrency: int | None = None) -> tuple[list[Session], list[float]]:
        conc = max(1, min(n, concurrency or self.args.connect_concurrency))
        sessions: list[Session] = []
        latencies: list[float] = []
        next_idx = iter(range(n))

        async def worker() -> None:
            port = self.router_port.get(system, 0)
            router = await HttpConn.open(port, f"127.0.0.1:{port}") if system in POLYSOCKETS else None
            try:
                for i in next_idx:
                    s: Session
                    if system in POLYSOCKETS:
                        assert router is not None
                        ps = PolysocketSession(i, poll_ttl_ms)
                        latencies.append(await ps.open(router, self.target))
                        s = ps
                    elif system == "direct":
                        d = DirectSession(i)
                        latencies.append(await d.open(self.target))
                        s = d
                    else:
                        sio = SocketIOSession(i, self.procs["socketio"].port)
                        latencies.append(await sio.open())
                        s = sio
                    sessions.append(s)
            finally:
                if router is not None:
                    router.close()

        await asyncio.gather(*(worker() for _ in range(conc)))
        return sessions, latencies

    async def close_sessions(self, sessions: list[Session]) -> int:
        failures = 0
        for i in range(0, len(sessions), 200):
            done = await asyncio.gather(*(s.close() for s in sessions[i:i + 200]), return_exceptions=True)
            failures += sum(1 for d in done if isinstance(d, BaseException))
        await asyncio.sleep(0.2)
        return failures

    # phases

    async def load_phase(self, system: str, n: int) -> dict[str, Any]:
        a = self.args
        t_open = time.perf_counter()
        sessions, connects = await self.open_sessions(system, n)
        open_s = time.perf_counter() - t_open
        server = self.pids(SERVER_PROCS[system])
        side = self.pids(SIDE_PROCS[system])
        everyone = {**server, **side}
        rec = Recorder()
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(s.loop(rec)) for s in sessions]
        profiler = None
        await asyncio.sleep(a.warmup)
        if a.profile and system in POLYSOCKETS:
            profiler = self.start_profiler(system, n)
        cpu0 = {k: cpu_seconds(p) for k, p in everyone.items()}
        me0 = cpu_seconds(os.getpid())
        t0 = time.perf_counter()
        rec.recording = True
        await asyncio.sleep(a.duration)
        rec.recording = False
        elapsed = time.perf_counter() - t0
        cpu1 = {k: cpu_seconds(p) for k, p in everyone.items()}
        me1 = cpu_seconds(os.getpid())
        rec.running = False
        done, pending = await asyncio.wait(tasks, timeout=30)
        for t in pending:
            t.cancel()
        errors = [repr(t.exception()) for t in done if not t.cancelled() and t.exception() is not None]
        mem = {k: memory_kib(p) for k, p in everyone.items()}
        close_failures = await self.close_sessions(sessions)
        if profiler is not None:
            profiler.wait(60)
        count = rec.count
        cpu = {k: cpu1[k] - cpu0[k] for k in everyone}
        per_msg = {k: (cpu[k] / count * 1e6 if count else float("nan")) for k in everyone}
        server_us = sum(per_msg[k] for k in server)
        result = {
            "system": system, "sessions": n, "seconds": elapsed, "messages": count,
            "msgs_per_s": count / elapsed, "rtt": latency_summary(rec.rtts),
            "server_cpu_us_per_msg": server_us,
            "cpu_us_per_msg": per_msg,
            "cpu_percent": {k: cpu[k] / elapsed * 100 for k in everyone},
            "loadgen_cpu_percent": (me1 - me0) / elapsed * 100,
            "memory_kib": mem,
            "errors": len(errors) + rec.errors, "first_error": errors[0] if errors else None,
            "close_failures": close_failures,
            "open_seconds": open_s,
        }
        if system in POLYSOCKETS:
            result["connect"] = {**latency_summary(connects),
                                 "concurrency": min(n, self.args.connect_concurrency)}
        return result

    async def idle_phase(self, system: str, k: int) -> dict[str, Any]:
        a = self.args
        server = self.pids(SERVER_PROCS[system])
        before = {n: memory_kib(p)["rss"] for n, p in server.items()}
        t0 = time.perf_counter()
        sessions, connects = await self.open_sessions(system, k, poll_ttl_ms=a.idle_poll_ttl)
        open_s = time.perf_counter() - t0
        await asyncio.sleep(a.idle_settle)
        after = {n: memory_kib(p)["rss"] for n, p in server.items()}
        errors = [getattr(s, "error", None) for s in sessions]
        errors = [e for e in errors if e]
        heartbeats = [getattr(s, "heartbeats", 0) for s in sessions]
        result: dict[str, Any] = {
            "system": system, "sockets": k, "open_seconds": open_s,
            "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_socket": {n: (after[n] - before[n]) / k for n in server},
            "errors": len(errors), "first_error": errors[0] if errors else None,
        }
        if system in POLYSOCKETS:
            result["poll_ttl_ms"] = a.idle_poll_ttl
            result["settle_seconds"] = a.idle_settle
            result["sessions_with_heartbeat"] = sum(1 for h in heartbeats if h > 0)
            result["connect"] = {**latency_summary(connects), "concurrency": min(k, a.connect_concurrency)}
        result["close_failures"] = await self.close_sessions(sessions)
        return result

    async def router_phase(self, system: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        router = self.procs[SIDE_PROCS[system][0]].popen.pid
        for conc, n in ((1, self.args.router_connects), (16, self.args.router_connects)):
            cpu0 = cpu_seconds(router)
            sessions, lat = await self.open_sessions(system, n, concurrency=conc)
            cpu1 = cpu_seconds(router)
            out[f"concurrency_{conc}"] = {**latency_summary(lat), "concurrency": conc,
                                          "router_cpu_ms_per_connect": (cpu1 - cpu0) / n * 1e3}
            await self.close_sessions(sessions)
        return out

    def start_profiler(self, system: str, n: int) -> subprocess.Popen[bytes]:
        out = Path(self.args.profile)
        out.mkdir(parents=True, exist_ok=True)
        pyspy = Path(sys.executable).parent / "py-spy"
        relay = self.procs[SERVER_PROCS[system][0]].popen.pid
        return subprocess.Popen([str(pyspy), "record", "-p", str(relay),
                                 "-d", str(max(1, int(self.args.duration))), "-r", "250", "-f", "raw",
                                 "-o", str(out / f"{system}-{n}.txt")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def run(self) -> dict[str, Any]:
        a = self.args
        log = self.log
        if a.idle:
            # the direct WebSocket first, on a fresh target: its growth is the upstream hop's alone
            for system in sorted(a.systems, key=lambda s: s != "direct"):
                log(f"idle: {a.idle} {system} sockets")
                r = await self.idle_phase(system, a.idle)
                log(f"  -> {r['kib_per_socket']} KiB/socket, errors {r['errors']}")
                self.results["idle"].append(r)
        system = next((s for s in POLYSOCKETS if s in a.systems), None)
        if system and a.router_connects:
            log(f"router: {a.router_connects} connects at concurrency 1 and 16")
            self.results["router"] = await self.router_phase(system)
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for rep in range(a.repeat):
            for n in a.sessions:
                for system in a.systems:
                    log(f"load: {system} x {n} sessions, {a.warmup}s warm-up + {a.duration}s"
                        + (f" (round {rep + 1}/{a.repeat})" if a.repeat > 1 else ""))
                    r = await self.load_phase(system, n)
                    log(f"  -> {r['msgs_per_s']:.0f} msg/s, p50 {r['rtt']['p50_ms']:.2f} ms, "
                        f"p99 {r['rtt']['p99_ms']:.2f} ms, server {r['server_cpu_us_per_msg']:.1f} µs/msg, "
                        f"loadgen {r['loadgen_cpu_percent']:.0f}%, errors {r['errors']}")
                    runs.setdefault((system, n), []).append(r)
        for n in a.sessions:  # per system and session count: the round with the median CPU per message
            for system in a.systems:
                rounds = sorted(runs[(system, n)], key=lambda x: x["server_cpu_us_per_msg"])
                median = dict(rounds[len(rounds) // 2])
                median["rounds_server_cpu_us_per_msg"] = [x["server_cpu_us_per_msg"] for x in runs[(system, n)]]
                median["rounds_msgs_per_s"] = [x["msgs_per_s"] for x in runs[(system, n)]]
                self.results["load"].append(median)
        return self.results

    def log(self, msg: str) -> None:
        if not self.args.silent:
            print(msg, file=sys.stderr, flush=True)


def lambda_import_ms(repeat: int = 3) -> dict[str, Any]:
    """Fresh-interpreter import of the router as a Lambda would load it (median of ``repeat``)."""
    code = ("import time; t = time.perf_counter()\n"
            "try:\n    import router_fn.handler as h\n"
            "except ImportError:\n"
            "    from mangum import Mangum\n"
            "    from router_fn.app import create_app\n"
            "    h = Mangum(create_app(), lifespan='off')\n"
            "print(time.perf_counter() - t)")
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                             env={**os.environ, "POLYSOCKET_REDIS_URL": "redis://127.0.0.1:1/0"})
        if out.returncode != 0:
            return {"error": out.stderr.strip().splitlines()[-1:]}
        times.append(float(out.stdout.strip()) * 1e3)
    times.sort()
    return {"median_ms": times[len(times) // 2], "runs_ms": times}


def start_stack(args: argparse.Namespace) -> tuple[Stack, dict[str, Proc]]:
    stack = Stack(cwd=REPO_ROOT)  # the bench starts modules of its own (`-m bench...`)
    try:
        return stack, _start_processes(stack, args)
    except BaseException:
        stack.stop()  # a process that fails to start must not leave the others running
        raise


def _start_processes(stack: Stack, args: argparse.Namespace) -> dict[str, Proc]:
    procs: dict[str, Proc] = {}
    procs["valkey"] = stack.start_valkey()
    quiet = {"POLYSOCKET_LOG_LEVEL": "warning"}
    relay_args = ["--capacity", str(max(20_000, 2 * args.idle)), "--drain-grace", "0"]
    # the open admission and a loopback target: this is a loopback-only benchmark
    router_env = {**quiet, "POLYSOCKET_ADMISSION": "open", "POLYSOCKET_ALLOW_TARGET_CIDRS": "127.0.0.0/8"}
    if "polysocket" in args.systems:
        procs["relay"] = stack.start_relay("bench1", extra=relay_args, env=quiet)
        procs["router"] = stack.start_router(env=router_env)
    procs["target"] = stack.start_echo()
    if "socketio" in args.systems:
        port = free_port()
        procs["socketio"] = stack._spawn("socketio", [sys.executable, "-m", "bench.sio_server", "--port",
                                                      str(port)], port)
    return procs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 and 100 sessions, 2 s each, 200 idle sockets")
    ap.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="comma-separated session counts (default 1,100,1000)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per load phase (default 6)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring (default 1.5)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of every load phase (interleaved); the report shows the median round")
    ap.add_argument("--idle", type=int, default=None, help="idle sockets for the memory phase (default 1000; 0 skips)")
    ap.add_argument("--idle-poll-ttl", type=int, default=5000, help="poll ttl (ms) of idle sockets: heartbeat period")
    ap.add_argument("--idle-settle", type=float, default=None, help="seconds idle sockets poll before RSS is read")
    ap.add_argument("--router-connects", type=int, default=None, help="connects per router phase (default 200)")
    ap.add_argument("--connect-concurrency", type=int, default=32, help="parallel connects when opening sessions")
    ap.add_argument("--systems", type=lambda s: s.split(","), default=list(DEFAULT_SYSTEMS),
                    help="comma-separated subset of " + ",".join(SYSTEMS))
    ap.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"), help="directory for the results")
    ap.add_argument("--name", default=None, help="results file name (default: full / quick)")
    ap.add_argument("--profile", default=None, help="py-spy the relay during polysocket load phases into DIR")
    ap.add_argument("--silent", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "sessions": [1, 100] if quick else [1, 100, 1000],
        "duration": 2.0 if quick else 6.0,
        "warmup": 0.5 if quick else 1.5,
        "idle": 200 if quick else 1000,
        "idle_settle": None,
        "router_connects": 50 if quick else 200,
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.idle_settle is None:
        args.idle_settle = args.idle_poll_ttl / 1000 + 1.0
    bad = [s for s in args.systems if s not in SYSTEMS]
    if bad:
        ap.error(f"unknown systems: {bad}")
    args.name = args.name or ("quick" if quick else "full")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fd_limit = raise_fd_limit(max(65536, 4 * args.idle + 4096))
    started = time.time()
    load_before = loadavg()
    stack, procs = start_stack(args)
    try:
        bench = Bench(args, procs)
        results = uvloop.run(bench.run())
    finally:
        if "socketio" in procs:  # engine.io's background tasks hold up a graceful stop; nothing to drain
            procs["socketio"].popen.kill()
            procs["socketio"].popen.wait(10)
        stack.stop()
    results["lambda_import"] = lambda_import_ms()
    results["meta"] = {
        "machine": machine_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "wall_seconds": time.time() - started, "fd_limit": fd_limit,
        "loadavg_before": load_before, "loadavg_after": loadavg(),
        "argv": sys.argv[1:] if argv is None else argv,
        "options": {k: v for k, v in vars(args).items() if k not in ("out", "silent")},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = report.markdown(results)
    (out / f"{args.name}.md").write_text(md)
    if not args.silent:
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
