"""``python -m bench``: polysocket against its baselines and its peers, in one run, on loopback.

Starts Valkey, a router and a relay node per polysocket system, the ``polysocket echo`` target,
a python-socketio server and the Node peers (engine.io, sockjs-node; ``bench/node``, installed
from its lock file on first use) as real processes (``polysocket_cli.processes.Stack``), then
drives them from this process on uvloop. See bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from polysocket_cli.processes import REPO_ROOT, Proc, Stack, free_port

from . import plots, report
from .clients import (
    DirectSession,
    EngineIOSession,
    PolysocketSession,
    PolysocketStreamSession,
    Recorder,
    Session,
    SocketIOSession,
    SockJSSession,
)
from .http1 import HttpConn
from .procstat import cpu_seconds, loadavg, machine_info, memory_kib

SYSTEMS = ("polysocket", "polysocket-stream", "direct", "socketio", "engineio", "sockjs-xhr", "sockjs-jsonp",
           "engineio-bridge", "sockjs-bridge")
# "polysocket-lean" (the A/B candidate of relay-ab.md) is gone: its HTTP protocol and GC threshold
# are the relay's only configuration now, so it measured the same code as "polysocket".
DEFAULT_SYSTEMS = SYSTEMS
# Each polysocket system gets a stack of its own (Valkey, router, relay), so that its idle-memory
# and idle-CPU phases start on a fresh relay; they share the echo target.
POLYSOCKETS = ("polysocket", "polysocket-stream")
STACK_SUFFIX = {"polysocket": "", "polysocket-stream": "-stream"}
# The server processes whose CPU each system is charged with (and the ones only reported).
SERVER_PROCS = {"polysocket": ("relay", "target"), "polysocket-stream": ("relay-stream", "target"),
                "direct": ("target",), "socketio": ("socketio",), "engineio": ("engineio",),
                "sockjs-xhr": ("sockjs-xhr",), "sockjs-jsonp": ("sockjs-jsonp",),
                # the bridges (issue 20): a Node server in front of the same target, both processes charged
                "engineio-bridge": ("engineio-bridge", "target"), "sockjs-bridge": ("sockjs-bridge", "target")}
SIDE_PROCS = {"polysocket": ("router", "valkey"), "polysocket-stream": ("router-stream", "valkey-stream"),
              "direct": (), "socketio": (), "engineio": (), "sockjs-xhr": (), "sockjs-jsonp": (),
              "engineio-bridge": (), "sockjs-bridge": ()}
# The peers: one server process per system, started with a heartbeat (ping) interval in ms.
NODE_DIR = REPO_ROOT / "bench" / "node"
NODE_PEERS = {"engineio": "engineio_echo.js", "sockjs-xhr": "sockjs_echo.js", "sockjs-jsonp": "sockjs_echo.js",
              "engineio-bridge": "engineio_bridge.js", "sockjs-bridge": "sockjs_bridge.js"}
# The bridges open a WebSocket per session to the echo target polysocket relays to (``--target``).
BRIDGES = ("engineio-bridge", "sockjs-bridge")
PEERS = ("socketio", *NODE_PEERS)
LOAD_HEARTBEAT_MS = 25_000  # every library's default, and the poll ttl of polysocket's load sessions


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
    def __init__(self, args: argparse.Namespace, stacks: list[Stack], procs: dict[str, Proc]) -> None:
        self.args = args
        self.stacks = stacks
        self.procs = procs
        self.target = f"ws://127.0.0.1:{procs['target'].port}/"
        self.router_port = {s: procs[SIDE_PROCS[s][0]].port for s in POLYSOCKETS if SIDE_PROCS[s][0] in procs}
        self.results: dict[str, Any] = {"load": [], "idle": [], "router": {}}

    def pids(self, names: tuple[str, ...]) -> dict[str, int]:
        return {n: self.procs[n].popen.pid for n in names if n in self.procs}

    def restart_peers(self, heartbeat_ms: int) -> None:
        """Fresh peer servers with another heartbeat interval (the idle phase's, then the load's)."""
        for system in PEERS:
            if system in self.procs:
                old = self.procs.pop(system)
                stop_peer(old)
                for stack in self.stacks:
                    if old in stack.procs:
                        stack.procs.remove(old)
                self.procs[system] = start_peer(self.stacks[0], system, heartbeat_ms, self.target)

    # opening and closing sessions

    async def new_session(self, system: str, i: int, router: HttpConn | None,
                          poll_ttl_ms: int) -> tuple[Session, float]:
        """Open one session of ``system``; return it and its connect latency in seconds."""
        if system in POLYSOCKETS:
            assert router is not None
            kind = PolysocketSession if system == "polysocket" else PolysocketStreamSession
            ps = kind(i, poll_ttl_ms)
            return ps, await ps.open(router, self.target)
        if system == "direct":
            d = DirectSession(i)
            return d, await d.open(self.target)
        port = self.procs[system].port
        if system == "socketio":
            sio = SocketIOSession(i, port)
            return sio, await sio.open()
        if system in ("engineio", "engineio-bridge"):
            eio = EngineIOSession(i, port)
            return eio, await eio.open()
        # the sockjs bridge is driven on xhr-polling, the cheaper of sockjs-node's two polling transports
        sj = SockJSSession(i, port, "xhr" if system == "sockjs-bridge" else system.removeprefix("sockjs-"))
        return sj, await sj.open()

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
                    s, latency = await self.new_session(system, i, router, poll_ttl_ms)
                    latencies.append(latency)
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
        # a session still waiting for its echo 30 s after the end lost a message: that is an error too
        errors += [f"no echo within 30 s of the end (session {s.idx})" for s, t in zip(sessions, tasks, strict=True)
                   if t in pending]
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
        if system == "polysocket-stream":  # streams the relay ended (byte / time budget) and the client reopened
            result["streams_opened"] = sum(getattr(s, "streams", 0) for s in sessions)
        return result

    async def idle_phase(self, system: str, k: int) -> dict[str, Any]:
        a = self.args
        server = self.pids(SERVER_PROCS[system])
        before = {n: memory_kib(p)["rss"] for n, p in server.items()}
        t0 = time.perf_counter()
        sessions, connects = await self.open_sessions(system, k, poll_ttl_ms=a.idle_poll_ttl)
        open_s = time.perf_counter() - t0
        cpu0 = {n: cpu_seconds(p) for n, p in server.items()}
        t_settle = time.perf_counter()
        await asyncio.sleep(a.idle_settle)
        settle_s = time.perf_counter() - t_settle
        cpu1 = {n: cpu_seconds(p) for n, p in server.items()}
        after = {n: memory_kib(p)["rss"] for n, p in server.items()}
        errors = [getattr(s, "error", None) for s in sessions]
        errors = [e for e in errors if e]
        # CPU an idle socket costs: server CPU during the settle window / sockets / minutes
        cpu_us = {n: (cpu1[n] - cpu0[n]) * 1e6 / k / (settle_s / 60) for n in server}
        result: dict[str, Any] = {
            "system": system, "sockets": k, "open_seconds": open_s,
            "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_socket": {n: (after[n] - before[n]) / k for n in server},
            "settle_seconds": settle_s,
            "cpu_us_per_socket_minute": cpu_us,
            "server_cpu_us_per_socket_minute": sum(cpu_us.values()),
            "errors": len(errors), "first_error": errors[0] if errors else None,
        }
        if system != "direct":  # every polling / streaming session counts the heartbeats it saw
            result["heartbeat_ms"] = a.idle_poll_ttl
            result["sessions_with_heartbeat"] = sum(1 for s in sessions if getattr(s, "heartbeats", 0) > 0)
        if system in POLYSOCKETS:
            result["poll_ttl_ms"] = a.idle_poll_ttl
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
                log(f"  -> {', '.join(f'{n} {v:.1f}' for n, v in r['kib_per_socket'].items())} KiB/socket, "
                    f"{r['server_cpu_us_per_socket_minute']:.0f} µs CPU/socket/min, "
                    f"heartbeats {r.get('sessions_with_heartbeat', '-')}, errors {r['errors']}")
                self.results["idle"].append(r)
            self.restart_peers(LOAD_HEARTBEAT_MS)  # the load phases on fresh peers, default heartbeats
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


def ensure_node_peers() -> None:
    """Install bench/node from its lock file (``npm ci``) when node_modules is missing or older."""
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SystemExit("python -m bench: the Node peers (" + ", ".join(NODE_PEERS) + ") need Node.js and npm "
                         "on PATH to install bench/node (npm ci); install them, or leave those systems out "
                         "with --systems")
    print(f"python -m bench: installing the Node peers: npm ci in {NODE_DIR}", file=sys.stderr, flush=True)
    out = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"python -m bench: npm ci in {NODE_DIR} failed:\n{out.stderr.strip()}")


def start_peer(stack: Stack, system: str, heartbeat_ms: int, target: str) -> Proc:
    """One peer server (python-socketio or a Node one) on a free port, heartbeat every ``heartbeat_ms``;
    a bridge relays to ``target``."""
    port = free_port()
    if system == "socketio":
        cmd = [sys.executable, "-m", "bench.sio_server", "--port", str(port), "--ping-interval", str(heartbeat_ms)]
    else:
        node = shutil.which("node") or "node"
        cmd = [node, str(NODE_DIR / NODE_PEERS[system]), "--port", str(port), "--heartbeat", str(heartbeat_ms)]
        if system in BRIDGES:
            cmd += ["--target", target]
    return stack._spawn(system, cmd, port)


def stop_peer(proc: Proc) -> None:
    # engine.io's background tasks hold up python-socketio's graceful stop; no peer has anything to drain
    proc.popen.kill()
    proc.popen.wait(10)


def start_stack(args: argparse.Namespace) -> tuple[list[Stack], dict[str, Proc]]:
    if "socketio" in args.systems and importlib.util.find_spec("socketio") is None:
        raise SystemExit("python -m bench: the socketio system needs python-socketio (pip install -e '.[bench]'); "
                         "or leave it out with --systems")
    if any(s in NODE_PEERS for s in args.systems):
        ensure_node_peers()
    # the bench starts modules of its own (`-m bench...`): processes start in the repository root
    stacks = [Stack(cwd=REPO_ROOT)]
    procs: dict[str, Proc] = {}
    try:
        _start_processes(stacks, procs, args)
        return stacks, procs
    except BaseException:
        stop_stacks(stacks, procs)  # a process that fails to start must not leave the others running
        raise


def stop_stacks(stacks: list[Stack], procs: dict[str, Proc]) -> None:
    for system in PEERS:
        if system in procs:
            stop_peer(procs[system])
    for stack in reversed(stacks):
        stack.stop()


def _start_processes(stacks: list[Stack], procs: dict[str, Proc], args: argparse.Namespace) -> None:
    quiet = {"POLYSOCKET_LOG_LEVEL": "warning"}
    relay_args = ["--capacity", str(max(20_000, 2 * args.idle)), "--drain-grace", "0"]
    # the open admission and a loopback target: this is a loopback-only benchmark
    router_env = {**quiet, "POLYSOCKET_ADMISSION": "open", "POLYSOCKET_ALLOW_TARGET_CIDRS": "127.0.0.0/8"}
    for system in POLYSOCKETS:
        if system not in args.systems:
            continue
        if STACK_SUFFIX[system]:
            stacks.append(Stack(cwd=REPO_ROOT))
        stack = stacks[-1]
        sfx = STACK_SUFFIX[system]
        procs["valkey" + sfx] = stack.start_valkey()
        extra = relay_args + (["--stream-bytes", str(args.stream_bytes)] if args.stream_bytes else [])
        procs["relay" + sfx] = stack.start_relay("bench" + (sfx or "1"), extra=extra, env=quiet)
        procs["router" + sfx] = stack.start_router(env=router_env)
    procs["target"] = stacks[0].start_echo()
    target = f"ws://127.0.0.1:{procs['target'].port}/"
    heartbeat = args.idle_poll_ttl if args.idle else LOAD_HEARTBEAT_MS
    for system in PEERS:
        if system in args.systems:
            procs[system] = start_peer(stacks[0], system, heartbeat, target)


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
    ap.add_argument("--idle", type=int, default=None, help="idle sockets for the memory phase (default 2000; 0 skips)")
    ap.add_argument("--idle-poll-ttl", type=int, default=5000,
                    help="heartbeat period (ms) of idle sockets: polysocket's poll / stream ttl, the peers' "
                         "ping / heartbeat interval")
    ap.add_argument("--idle-settle", type=float, default=None,
                    help="seconds idle sockets stay open before RSS is read; the idle CPU window "
                         "(default 2 heartbeat periods + 1 s)")
    ap.add_argument("--stream-bytes", type=int, default=None,
                    help="the relay's --stream-bytes (bytes one GET /stream carries before it ends; "
                         "default: the relay's, 128 KiB)")
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
        "idle": 200 if quick else 2000,
        "idle_settle": None,
        "router_connects": 50 if quick else 200,
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.idle_settle is None:
        args.idle_settle = 2 * args.idle_poll_ttl / 1000 + 1.0
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
    stacks, procs = start_stack(args)
    try:
        bench = Bench(args, stacks, procs)
        results = uvloop.run(bench.run())
    finally:
        stop_stacks(stacks, procs)
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
    results["plots"] = plots.write_all(results, out, args.name)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = report.markdown(results)
    (out / f"{args.name}.md").write_text(md)
    if not args.silent:
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
