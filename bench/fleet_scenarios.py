"""Whole connects through the control plane at fleet sizes: the scenarios of issue 19, item 5.

``bench.fleet`` (the pick alone, old vs new) calls :func:`run_all`. Here a connect is everything a
connect costs Redis, issued by the real code on both sides:

- routers (``--routers`` processes, as Lambda runs many): the token lookup and the rate-limit
  counters (``TokenStore.lookup``, ``RateLimiter.hit``), then ``Establisher.establish`` (the pick,
  the wait for the node's ``ack`` and ``done``), open loop at the offered rate;
- nodes (one process, many simulated nodes): the real ``NodeAgent`` registers, heart-beats (every
  second; the TTL is raised to 15 s so a busy bench machine does not retire them), takes requests
  from its inbox with ``BLPOP`` and answers them; only its socket table is a stand-in, which opens
  a socket without an upstream (the target dial is excluded, as the issue asks) and holds it.

Counted from one Valkey's ``INFO`` (commandstats, cpu, memory) around each scenario, minus the
fleet's idle cost over the same time (the nodes' heartbeats and ``BLPOP`` timeouts, measured
first while nothing connects), divided by the connects: Valkey's time in commands, its total CPU
(socket I/O included), and commands per connect. Latency is the router's, from the token lookup
to the ``done`` reply. Scenarios, each on a fresh fleet:

- ``steady``: the nodes half full, connects at the offered rate;
- ``drain``: the nodes 30-70 % full, one of them drains (deregisters) and its sockets come back
  (``--burst`` connects within 5 s: the offered rate is raised to burst / 5 s if it is lower);
- ``scale-out``: the nodes 90 % full, ``JOINERS`` empty nodes join, ``--burst`` connects.

The largest node's share of a scenario's connects against the mean share shows herds; memory per
node is ``used_memory`` after registration over the nodes, per socket the growth over a scenario
(replies read, reservations settled) over its connects.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis

from bench.plots import bar_chart
from polysocket_core.control import EstablishRequest, Keys
from polysocket_core.reservations import Reservation, TokenLedger
from relay_node.control.agent import NodeAgent
from relay_node.settings import RelayConfig
from relay_node.sockets.table import SocketTable
from router_fn.admission import Admitted
from router_fn.establish import Establisher
from router_fn.ratelimit import Rate, RateLimiter
from router_fn.tokens import TokenStore

CAPACITY = 10_000
JOINERS = 50
DRAIN_WINDOW_S = 5.0  # the drained node's sockets come back within this
HEARTBEAT_TTL_S = 15.0  # beats every second (min(1, ttl / 3)), as a relay's default; a busy machine is not a dead node
IDLE_S = 2.0
MAX_IN_FLIGHT = 64  # per router process; past it the open loop waits: an overload shows as a lower rate, not timeouts
MAX_CONNECTIONS = 4096  # per process: redis-py defaults to 100, fewer than a fleet of BLPOP loops needs
NO_LIMIT = Rate(0, 1)  # the rate-limit counters are written either way (RateLimiter.hit); 0 never refuses
SCENARIOS = ("steady", "drain", "scale-out")


@dataclass(frozen=True, slots=True)
class Plan:
    """One scenario's fleet and load."""

    scenario: str
    nodes: int
    connects: int
    rate: float  # offered connects per second, over all routers
    routers: int
    seed: int

    def loads(self) -> list[int]:
        rng = random.Random(self.seed)
        if self.scenario == "steady":
            return [CAPACITY // 2] * self.nodes
        if self.scenario == "drain":
            return [int(CAPACITY * rng.uniform(0.3, 0.7)) for _ in range(self.nodes)]
        return [CAPACITY * 9 // 10] * self.nodes


class SimSocket:
    """An open socket without an upstream: the reservation it owns, held until the run ends."""

    protocol = ""

    def __init__(self, reservation: Reservation) -> None:
        self.reservation = reservation

    def close(self, cause: object) -> None:
        self.reservation.release()


class SimTable:
    """What the agent uses of a socket table, without sockets: a load, a token ledger, ``open``."""

    def __init__(self, load: int) -> None:
        self.load = load
        self.ledger = TokenLedger()
        self.opened = 0

    def __len__(self) -> int:
        return self.load

    async def open(self, req: EstablishRequest, reservation: Reservation) -> SimSocket:
        self.load += 1
        self.opened += 1
        return SimSocket(reservation)

    async def run_sweeper(self) -> None:
        await asyncio.Event().wait()

    def kill_token(self, token_id: str, reason: str) -> int:
        return 0

    async def close_all(self, code: int, reason: str) -> None:
        self.load = 0

    def abort_all(self) -> None:
        self.load = 0


def _node_ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


async def _nodes_main(url: str, plan: Plan, commands: Queue[str], answers: Queue[Any]) -> None:
    """The fleet: registers, then obeys ``join`` / ``drain`` / ``stop``; answers each with ``ok``."""
    r = aioredis.Redis.from_url(url, max_connections=MAX_CONNECTIONS)
    agents: dict[str, NodeAgent] = {}

    async def start(ids: list[str], loads: list[int]) -> None:
        for node_id, load in zip(ids, loads, strict=True):
            cfg = RelayConfig(node_id=node_id, fqdn=f"{node_id}.relay.test", capacity=CAPACITY,
                              heartbeat_ttl_s=HEARTBEAT_TTL_S)
            agent = NodeAgent(cfg, cast(SocketTable, SimTable(load)), r)
            await agent.start()
            agents[node_id] = agent

    await start(_node_ids("n", plan.nodes), plan.loads())
    answers.put("ok")
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, commands.get)
        if cmd == "join":
            await start(_node_ids("j", JOINERS), [0] * JOINERS)
        elif cmd == "drain":
            victim = agents.pop(_node_ids("n", 1)[0])
            victim.draining = True
            await victim.stop()  # deregisters: out of the pick's index at once
        elif cmd == "stop":
            opened = {i: cast(SimTable, a.table).opened for i, a in agents.items()}
            for agent in agents.values():
                for task in agent._tasks:
                    task.cancel()
            await r.aclose()
            answers.put(opened)
            return
        answers.put("ok")


def _nodes_process(url: str, plan: Plan, commands: Queue[str], answers: Queue[Any]) -> None:
    asyncio.run(_nodes_main(url, plan, commands, answers))


async def _router_main(url: str, plan: Plan, index: int, token: str, go: Event, out: Queue[Any]) -> None:
    """One router process: ``connects / routers`` connects, open loop at ``rate / routers``."""
    r = aioredis.Redis.from_url(url, max_connections=MAX_CONNECTIONS)
    keys = Keys()
    store, limiter = TokenStore(r, keys), RateLimiter(r, keys, NO_LIMIT, NO_LIMIT)
    est = Establisher(r, keys, 2.0, 15.0, rng=random.Random(plan.seed * 100 + index))
    count = plan.connects // plan.routers + (1 if index < plan.connects % plan.routers else 0)
    interval = plan.routers / plan.rate
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    latencies: list[float] = []
    chosen: Counter[str] = Counter()
    failures: Counter[str] = Counter()

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            record = await store.lookup(token)
            assert record is not None
            await limiter.hit("192.0.2.1", record.id)
            got = await est.establish("ws://t.test/", [], "bench",
                                      Admitted(token_id=record.id, max_sockets=record.max_sockets))
            latencies.append(time.perf_counter() - t0)
            chosen[got.node_id] += 1
        except Exception as exc:  # counted and reported: an overloaded run must still end
            failures[type(exc).__name__ + ": " + str(exc)[:60]] += 1
        finally:
            gate.release()

    await r.ping()
    await store.lookup(token)  # connections open, scripts cached before the clock starts
    go.wait()
    start = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    await r.aclose()
    out.put({"latencies": latencies, "chosen": dict(chosen), "failures": dict(failures), "elapsed": elapsed})


def _router_process(url: str, plan: Plan, index: int, token: str, go: Event, out: Queue[Any]) -> None:
    asyncio.run(_router_main(url, plan, index, token, go, out))


@dataclass
class Sample:
    """What one INFO read says: commands (calls, usec), CPU seconds, memory bytes."""

    calls: float
    usec: float
    cpu_s: float
    memory: int
    at: float

    @classmethod
    async def take(cls, r: aioredis.Redis) -> Sample:
        stats = await r.info("commandstats")
        own = ("cmdstat_info", "cmdstat_config|resetstat")
        calls = sum(float(v["calls"]) for k, v in stats.items() if k not in own)
        usec = sum(float(v["usec"]) for k, v in stats.items() if k not in own)
        cpu = await r.info("cpu")
        mem = await r.info("memory")
        return cls(calls, usec, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
                   int(mem["used_memory"]), time.monotonic())


@dataclass
class Result:
    scenario: str
    nodes: int
    connects: int
    failed: int
    offered_rate: float
    achieved_rate: float
    cpu_us: float  # Valkey CPU per connect, idle cost removed
    command_us: float  # Valkey time executing commands per connect, idle cost removed
    commands: float  # Redis commands per connect (scripts count with the commands they run)
    p50_ms: float
    p99_ms: float
    largest_share: float  # the largest node's share of the connects / the mean share
    joiners_share: float  # scale-out: the joiners' share of the connects together
    memory_per_node: float
    memory_per_socket: float
    failures: dict[str, int] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def run_scenario(url: str, plan: Plan) -> Result:
    """One scenario on a fresh fleet (Valkey flushed first)."""
    ctx = mp.get_context("spawn")
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    token, _ = await TokenStore(r, Keys()).create(["*"], ["ws://*"], 10**9, label="bench")
    base = await Sample.take(r)
    commands: Queue[str] = ctx.Queue()
    answers: Queue[Any] = ctx.Queue()
    nodes = ctx.Process(target=_nodes_process, args=(url, plan, commands, answers), daemon=True)
    nodes.start()
    loop = asyncio.get_running_loop()

    async def ask(cmd: str) -> Any:
        commands.put(cmd)
        return await loop.run_in_executor(None, answers.get)

    try:
        await loop.run_in_executor(None, answers.get)  # registered
        registered = await Sample.take(r)
        memory_per_node = (registered.memory - base.memory) / plan.nodes
        if plan.scenario == "scale-out":
            await ask("join")
        elif plan.scenario == "drain":
            await ask("drain")
        await r.config_resetstat()
        idle0 = await Sample.take(r)
        await asyncio.sleep(IDLE_S)
        idle1 = await Sample.take(r)
        idle_span = idle1.at - idle0.at
        go, out = ctx.Event(), ctx.Queue()
        routers = [ctx.Process(target=_router_process, args=(url, plan, i, token, go, out), daemon=True)
                   for i in range(plan.routers)]
        for p in routers:
            p.start()
        await asyncio.sleep(1.0 + 0.3 * plan.routers)  # imports and connections, before the clock
        s0 = await Sample.take(r)
        go.set()
        parts = [await loop.run_in_executor(None, out.get) for _ in routers]
        s1 = await Sample.take(r)
        for p in routers:
            p.join(10)
        await asyncio.sleep(1.5)  # the next heartbeats settle the reservations
        settled = await Sample.take(r)
        opened: dict[str, int] = await ask("stop")
        nodes.join(10)
    finally:
        if nodes.is_alive():
            nodes.kill()
        await r.aclose()
    span = s1.at - s0.at
    latencies = [x for p in parts for x in p["latencies"]]
    chosen: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for p in parts:
        chosen.update(p["chosen"])
        failures.update(p["failures"])
    done = len(latencies) or 1
    share = {"steady": plan.nodes, "drain": plan.nodes - 1, "scale-out": plan.nodes + JOINERS}[plan.scenario]

    def per_connect(a: float, b: float, idle_a: float, idle_b: float) -> float:
        return ((b - a) - (idle_b - idle_a) * span / idle_span) / done

    assert sum(opened.values()) >= len(latencies)
    return Result(
        scenario=plan.scenario, nodes=plan.nodes, connects=len(latencies), failed=sum(failures.values()),
        offered_rate=plan.rate, achieved_rate=len(latencies) / max(p["elapsed"] for p in parts),
        cpu_us=per_connect(s0.cpu_s, s1.cpu_s, idle0.cpu_s, idle1.cpu_s) * 1e6,
        command_us=per_connect(s0.usec, s1.usec, idle0.usec, idle1.usec),
        commands=per_connect(s0.calls, s1.calls, idle0.calls, idle1.calls),
        p50_ms=_percentile(latencies, 0.5) * 1000, p99_ms=_percentile(latencies, 0.99) * 1000,
        largest_share=max(chosen.values(), default=0) / (done / share),
        joiners_share=sum(n for i, n in chosen.items() if i.startswith("j")) / done,
        memory_per_node=memory_per_node, memory_per_socket=(settled.memory - s0.memory) / done,
        failures=dict(failures),
    )


def plans(nodes: int, connects: int, burst: int, rate: float, routers: int, seed: int) -> list[Plan]:
    return [Plan("steady", nodes, connects, rate, routers, seed),
            Plan("drain", nodes, burst, max(rate, burst / DRAIN_WINDOW_S), routers, seed),
            Plan("scale-out", nodes, burst, rate, routers, seed)]


async def run_all(url: str, nodes: int, connects: int, burst: int, rate: float, routers: int,
                  seed: int) -> list[Result]:
    results = []
    for plan in plans(nodes, connects, burst, rate, routers, seed):
        result = await run_scenario(url, plan)
        print(f"scenario {plan.scenario} at {nodes} nodes: {asdict(result)}", file=sys.stderr)
        results.append(result)
    return results


def table(results: list[Result]) -> list[str]:
    """The scenarios as a markdown table."""
    out = ["| scenario | nodes | connects (failed) | offered / achieved connects/s | Valkey CPU µs / connect "
           "| Valkey µs in commands / connect | commands / connect | p50 ms | p99 ms "
           "| largest node's share / mean | joiners' share | Valkey bytes / node | Valkey bytes / socket |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in results:
        out.append(f"| {x.scenario} | {x.nodes:,} | {x.connects:,} ({x.failed}) | {x.offered_rate:,.0f} / "
                   f"{x.achieved_rate:,.0f} | {x.cpu_us:,.1f} | {x.command_us:,.1f} | {x.commands:.1f} | "
                   f"{x.p50_ms:.2f} | {x.p99_ms:.2f} | {x.largest_share:.2f} | "
                   f"{x.joiners_share:.1%} | {x.memory_per_node:,.0f} | {x.memory_per_socket:,.0f} |")
    return out


def medians(results: list[Result]) -> dict[str, float]:
    """Per-connect medians over the scenarios (what docs/scale.md rounds)."""
    return {k: statistics.median(getattr(x, k) for x in results)
            for k in ("cpu_us", "command_us", "commands", "memory_per_node")}


def write_plots(results: list[Result], out_dir: Path, name: str) -> list[Path]:
    """One bar per scenario for each target of issue 19 (its limit as a dashed line), as ``python -m
    bench`` draws its charts (bench/plots.py)."""
    charts = {
        "cpu": ("Valkey CPU per connect (all of its commands)", "µs", "cpu_us", None, ""),
        "commands": ("Valkey time in commands per connect", "µs", "command_us", 150.0, "target 150 µs"),
        "p99": ("p99 connect latency through the control plane", "ms", "p99_ms", 20.0, "target 20 ms"),
        "share": ("Largest node's share of connects / mean share", "times the mean", "largest_share", 2.0, "target 2x"),
    }
    written = []
    for suffix, (title, unit, attr, limit, label) in charts.items():
        bars = {f"{x.scenario} ({x.nodes:,})": {attr: float(getattr(x, attr))} for x in results}
        path = out_dir / f"{name}-{suffix}.svg"
        path.write_text(bar_chart(title, unit, bars, unit=unit, limit=limit, limit_label=label))
        written.append(path)
    return written
