"""Whole connects through the control plane at fleet sizes: the scenarios of issue 19, item 5.

``bench.fleet`` (the pick alone, old vs new) calls :func:`run_all`. Here a connect is everything a
connect costs Redis, issued by the real code on both sides:

- routers (``--routers`` processes, as Lambda runs many): the router's own admission
  (``TokenAdmission.admit``: the token lookup and the rate-limit counters in one round trip, the
  checks, the SSRF guard's decision), then ``Establisher.establish`` (the pick, the wait for the
  node's answer), on the pipelines the router builds (polysocket_redis.pipelines), open loop at the
  offered rate;
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
node is ``used_memory`` after registration over the nodes (their records and their client
connections), per socket the growth of ``used_memory_dataset`` (keys and values only: client buffers,
which a thousand connections move by megabytes, left out) over a scenario, replies read and
reservations settled, over its connects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import ipaddress
import multiprocessing as mp
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis

from bench.plots import bar_chart
from bench.procstat import cpu_seconds
from polysocket_cli.echo import loop_factory
from polysocket_core.control import EstablishRequest, Keys
from polysocket_core.redis_client import ANSWER_SOON, RIDE_OUT, Patience, redis_client
from polysocket_core.reservations import Reservation, TokenLedger
from polysocket_core.wire import ConnectParams
from polysocket_redis.pipelines import pipelines_for
from relay_node.control import agent as agent_module
from relay_node.control.agent import NodeAgent
from relay_node.server import GC_GEN0_THRESHOLD
from relay_node.settings import RelayConfig
from relay_node.sockets.table import SocketTable
from router_fn.admission import ConnectContext, TokenAdmission
from router_fn.establish import Establisher
from router_fn.ratelimit import Rate, RateLimiter
from router_fn.tokens import TokenStore

CAPACITY = 10_000
JOINERS = 50
DRAIN_WINDOW_S = 5.0  # the drained node's sockets come back within this
HEARTBEAT_TTL_S = 15.0  # beats every second (min(1, ttl / 3)), as a relay's default; a busy machine is not a dead node
IDLE_S = 2.0
PROCESS_WAIT_S = 600.0  # the longest a scenario waits for a router or node process's word: a dead or hung one fails it
WARMUP_ROUNDS = 2  # of MAX_IN_FLIGHT connects per router process, before the clock starts
MAX_IN_FLIGHT = 64  # per router process; past it the open loop waits: an overload shows as a lower rate, not timeouts
MAX_CONNECTIONS = 4096  # per process: redis-py defaults to 100, fewer than a fleet of BLPOP loops needs
NEVER_REFUSES = Rate(10**9, 1)  # the router's rate-limit counters are written and read, and never refuse
# The target's name resolves, in the admission's SSRF guard, to a documentation address the guard
# is told to allow: the guard decides as for a real target, and nothing dials it (the nodes' socket
# tables are stand-ins).
TARGET, TARGET_NETWORK = "ws://t.test/", ipaddress.ip_network("198.51.100.0/24")


async def _resolve_target(host: str, port: int) -> list[str]:
    return ["198.51.100.7"]
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
    node_processes: int = 1  # the simulated fleet's agents, dealt over this many processes

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


@dataclass(frozen=True, slots=True)
class Shard:
    """One node process's part of the fleet: its nodes and loads, and the joiners it starts."""

    ids: list[str]
    loads: list[int]
    joiners: list[str]
    stagger_s: float  # registrations spread over this, as a fleet whose nodes started at different times
    inbox_block_s: float = agent_module.INBOX_BLOCK_S  # another value only for the at-rest A/B (:func:`at_rest`)


def shards(plan: Plan, processes: int) -> list[Shard]:
    """The fleet dealt round-robin over ``processes`` node processes (the drained node ``n00000``
    lands in the first)."""
    ids, loads, joiners = _node_ids("n", plan.nodes), plan.loads(), _node_ids("j", JOINERS)
    stagger = RelayConfig(node_id="x", fqdn="x", heartbeat_ttl_s=HEARTBEAT_TTL_S).heartbeat_interval_s
    return [Shard(ids[i::processes], loads[i::processes], joiners[i::processes], stagger)
            for i in range(processes)]


def _client(url: str, patience: Patience) -> aioredis.Redis:
    """The client a relay (``RIDE_OUT``) or a router (``ANSWER_SOON``) builds, its timeouts and retries
    included (an inbox read blocks longer than redis-py's default read timeout), with a pool for the
    many simulated nodes or connects in flight one process holds here."""
    client = redis_client(url, patience=patience)
    client.connection_pool.max_connections = MAX_CONNECTIONS
    return client


async def _nodes_main(url: str, shard: Shard, commands: Queue[str], answers: Queue[Any]) -> None:
    """Part of the fleet: registers, then obeys ``join`` / ``drain`` / ``stop``; answers each with
    ``ok`` (``stop`` with the connects each node opened)."""
    r = _client(url, RIDE_OUT)
    pipelines = pipelines_for(url, r, patience=RIDE_OUT)  # as a relay builds them (relay_node.node), one for all
    agents: dict[str, NodeAgent] = {}
    agent_module.INBOX_BLOCK_S = shard.inbox_block_s

    async def start(ids: list[str], loads: list[int], stagger_s: float) -> None:
        t0 = time.monotonic()
        for i, (node_id, load) in enumerate(zip(ids, loads, strict=True)):
            delay = t0 + stagger_s * i / max(1, len(ids)) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            cfg = RelayConfig(node_id=node_id, fqdn=f"{node_id}.relay.test", capacity=CAPACITY,
                              heartbeat_ttl_s=HEARTBEAT_TTL_S)
            agent = NodeAgent(cfg, cast(SocketTable, SimTable(load)), r, pipelines)
            await agent.start()
            agents[node_id] = agent

    await start(shard.ids, shard.loads, shard.stagger_s)
    gc.collect()
    gc.freeze()
    answers.put("ok")
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, commands.get)
        if cmd == "join":
            await start(shard.joiners, [0] * len(shard.joiners), 0.0)
        elif cmd == "drain":
            victim = agents.pop(_node_ids("n", 1)[0], None)
            if victim is not None:
                victim.draining = True
                await victim.stop()  # deregisters: out of the pick's index at once
        elif cmd == "stop":
            opened = {i: cast(SimTable, a.table).opened for i, a in agents.items()}
            for agent in agents.values():
                for task in agent._tasks:
                    task.cancel()
            await pipelines.aclose()
            await r.aclose()
            answers.put(opened)
            return
        answers.put("ok")


def _nodes_process(url: str, shard: Shard, commands: Queue[str], answers: Queue[Any]) -> None:
    # As a relay sets it (relay_node/server.py, ``gc-gen0``); the registered fleet is frozen out of
    # the collector below: one heap holds what a real fleet spreads over its nodes' heaps, and a
    # full collection over all of it would stall every simulated node at once (100-450 ms seen).
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    with asyncio.Runner(loop_factory=loop_factory()) as runner:  # uvloop, as a relay runs its agent
        runner.run(_nodes_main(url, shard, commands, answers))


async def _router_main(url: str, plan: Plan, index: int, token: str, go: Event, out: Queue[Any]) -> None:
    """One router process: ``connects / routers`` connects, open loop at ``rate / routers``."""
    r = _client(url, ANSWER_SOON)
    keys = Keys()
    pipelines = pipelines_for(url, r, patience=ANSWER_SOON, spare=True)  # as the router builds them (router_fn.app)
    admission = TokenAdmission(TokenStore(r, keys), RateLimiter(r, keys, NEVER_REFUSES, NEVER_REFUSES),
                               [TARGET_NETWORK], resolve=_resolve_target, pipelines=pipelines)
    est = Establisher(r, keys, 2.0, 15.0, rng=random.Random(plan.seed * 100 + index), pipelines=pipelines)
    params = ConnectParams(target=TARGET, caller="bench", token=token, protocols=[])
    caller = ConnectContext(client_ip="192.0.2.1", origin=None)
    count = plan.connects // plan.routers + (1 if index < plan.connects % plan.routers else 0)
    interval = plan.routers / plan.rate
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    latencies: list[float] = []
    chosen: Counter[str] = Counter()
    failures: Counter[str] = Counter()

    async def connect() -> str:
        admitted = await admission.admit(params, caller)
        got = await est.establish(TARGET, [], "bench", admitted)
        return got.node_id

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            node_id = await connect()
            latencies.append(time.perf_counter() - t0)
            chosen[node_id] += 1
        except Exception as exc:  # counted and reported: an overloaded run must still end
            failures[type(exc).__name__ + ": " + str(exc)[:60]] += 1
        finally:
            gate.release()

    # Before the clock: the pool's connections opened and the scripts cached on both sides, here
    # and in the node processes (each first use costs a connect; uncounted, as a warm fleet's are).
    for _ in range(WARMUP_ROUNDS):  # a failure here shows again, counted, in the measured connects
        await asyncio.gather(*(connect() for _ in range(MAX_IN_FLIGHT)), return_exceptions=True)
    gc.collect()
    gc.freeze()  # what the imports and the warm-up left: long-lived, out of the collector's way
    out.put("ready")
    go.wait()
    start = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()  # only those in flight: a list of every done task fills the collector
    for i in range(count):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    await r.aclose()
    out.put({"latencies": latencies, "chosen": dict(chosen), "failures": dict(failures), "elapsed": elapsed})


def _router_process(url: str, plan: Plan, index: int, token: str, go: Event, out: Queue[Any]) -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_router_main(url, plan, index, token, go, out))


@dataclass
class Sample:
    """What one INFO read says: commands (calls, usec), CPU seconds, memory bytes."""

    calls: float
    usec: float
    cpu_s: float
    memory: int
    dataset: int  # used_memory_dataset: the keys and values, without client buffers
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
                   int(mem["used_memory"]), int(mem["used_memory_dataset"]), time.monotonic())


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
    max_ms: float
    largest_share: float  # the largest node's share of the connects / the mean share
    joiners_share: float  # scale-out: the joiners' share of the connects together
    memory_per_node: float
    memory_per_socket: float
    router_cpu_us: float = 0.0  # the harness's router processes, per connect (the work a Lambda fleet does)
    nodes_cpu_us: float = 0.0  # the simulated nodes' processes, per connect, their heartbeats included
    idle_calls_per_s: float = 0.0  # the fleet at rest: Valkey commands per second (heartbeats, inbox reads)
    idle_valkey_cores: float = 0.0  # the fleet at rest: Valkey's CPU
    idle_nodes_cores: float = 0.0  # the fleet at rest: the simulated nodes' CPU (spread over the fleet in production)
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
    await r.execute_command("FLUSHALL", "SYNC")  # type: ignore[no-untyped-call]  # not lazily: the memory samples start from empty
    token, _ = await TokenStore(r, Keys()).create(["*"], ["ws://*"], 10**9, label="bench")
    base = await Sample.take(r)
    pipes: list[tuple[Queue[str], Queue[Any]]] = [(ctx.Queue(), ctx.Queue()) for _ in range(plan.node_processes)]
    nodes: list[BaseProcess] = [ctx.Process(target=_nodes_process, args=(url, shard, commands, answers), daemon=True)
             for shard, (commands, answers) in zip(shards(plan, plan.node_processes), pipes, strict=True)]
    for p in nodes:
        p.start()
    loop = asyncio.get_running_loop()

    async def ask(cmd: str) -> list[Any]:
        for commands, _ in pipes:
            commands.put(cmd)
        return [await loop.run_in_executor(None, answers.get, True, PROCESS_WAIT_S) for _, answers in pipes]

    routers: list[BaseProcess] = []
    try:
        for _, answers in pipes:  # registered (queue.Empty: a node process died or hung)
            await loop.run_in_executor(None, answers.get, True, PROCESS_WAIT_S)
        registered = await Sample.take(r)
        memory_per_node = (registered.memory - base.memory) / plan.nodes
        if plan.scenario == "scale-out":
            await ask("join")
        elif plan.scenario == "drain":
            await ask("drain")
        await r.config_resetstat()
        idle0 = await Sample.take(r)
        idle_cpu0 = sum(cpu_seconds(cast(int, p.pid)) for p in nodes)
        await asyncio.sleep(IDLE_S)
        idle1 = await Sample.take(r)
        idle_nodes_cpu = sum(cpu_seconds(cast(int, p.pid)) for p in nodes) - idle_cpu0
        idle_span = idle1.at - idle0.at
        go, out = ctx.Event(), ctx.Queue()
        routers += [ctx.Process(target=_router_process, args=(url, plan, i, token, go, out), daemon=True)
                   for i in range(plan.routers)]
        for p in routers:
            p.start()
        for _ in routers:
            await loop.run_in_executor(None, out.get, True, PROCESS_WAIT_S)  # warmed up (queue.Empty: a router died)
        s0 = await Sample.take(r)
        cpu0 = {p: cpu_seconds(cast(int, p.pid)) for p in routers + nodes}
        go.set()
        parts = [await loop.run_in_executor(None, out.get, True, PROCESS_WAIT_S) for _ in routers]
        s1 = await Sample.take(r)
        used = {p: cpu_seconds(cast(int, p.pid)) - cpu0[p] for p in routers + nodes}
        for p in routers:
            p.join(10)
        await asyncio.sleep(1.5)  # the next heartbeats settle the reservations
        settled = await Sample.take(r)
        opened: dict[str, int] = {}
        for part in await ask("stop"):
            opened.update(part)
        for p in nodes:
            p.join(10)
    finally:
        for p in nodes + routers:
            if p.is_alive():
                p.kill()
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
        max_ms=max(latencies, default=float("nan")) * 1000,
        largest_share=max(chosen.values(), default=0) / (done / share),
        joiners_share=sum(n for i, n in chosen.items() if i.startswith("j")) / done,
        router_cpu_us=sum(used[p] for p in routers) / done * 1e6,
        idle_calls_per_s=(idle1.calls - idle0.calls) / idle_span,
        idle_valkey_cores=(idle1.cpu_s - idle0.cpu_s) / idle_span,
        idle_nodes_cores=idle_nodes_cpu / idle_span,
        nodes_cpu_us=sum(used[p] for p in nodes) / done * 1e6,
        memory_per_node=memory_per_node, memory_per_socket=(settled.dataset - s0.dataset) / done,
        failures=dict(failures),
    )


@dataclass(frozen=True, slots=True)
class AtRest:
    """The fleet doing nothing but heartbeats and inbox reads, with one inbox block."""

    nodes: int
    inbox_block_s: float
    calls_per_s: float
    valkey_cores: float
    nodes_cores: float


async def at_rest(url: str, nodes: int, inbox_block_s: float) -> AtRest:
    """Register ``nodes`` in one process (inbox reads blocking ``inbox_block_s``), let them settle,
    and count what they cost at rest over one block (every node's read ends once in it) and at
    least 4 s: the A/B of ``long-inbox-block`` (bench/PERF_LEDGER.md)."""
    ctx = mp.get_context("spawn")
    r = aioredis.Redis.from_url(url)
    await r.execute_command("FLUSHALL", "SYNC")  # type: ignore[no-untyped-call]  # not lazily: the memory samples start from empty
    plan = Plan("steady", nodes, 0, 1.0, 1, 1)
    shard = dataclasses.replace(shards(plan, 1)[0], inbox_block_s=inbox_block_s)
    commands: Queue[str] = ctx.Queue()
    answers: Queue[Any] = ctx.Queue()
    proc = ctx.Process(target=_nodes_process, args=(url, shard, commands, answers), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, answers.get, True, PROCESS_WAIT_S)
        await asyncio.sleep(2.0)  # the registrations' burst over, beats in their phases
        await r.config_resetstat()
        a, cpu_a = await Sample.take(r), cpu_seconds(cast(int, proc.pid))
        await asyncio.sleep(max(4.0, inbox_block_s))
        b, cpu_b = await Sample.take(r), cpu_seconds(cast(int, proc.pid))
        commands.put("stop")
        await loop.run_in_executor(None, answers.get, True, PROCESS_WAIT_S)
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
        await r.aclose()
    span = b.at - a.at
    return AtRest(nodes, inbox_block_s, (b.calls - a.calls) / span, (b.cpu_s - a.cpu_s) / span,
                  (cpu_b - cpu_a) / span)


def at_rest_table(rows: list[AtRest]) -> list[str]:
    out = ["| nodes | inbox read blocks | Valkey commands / s | Valkey CPU (cores) | simulated nodes' CPU (cores) |",
           "|---:|---:|---:|---:|---:|"]
    out += [f"| {x.nodes:,} | {x.inbox_block_s:g} s | {x.calls_per_s:,.0f} | {x.valkey_cores:.3f} | "
            f"{x.nodes_cores:.3f} |" for x in rows]
    return out


def plans(nodes: int, connects: int, burst: int, rate: float, routers: int, seed: int,
          sweep: tuple[float, ...] = (), node_processes: int = 1) -> list[Plan]:
    """Steady connects at each ``sweep`` rate (where the latency bends), then the three scenarios."""
    return [*(Plan("steady", nodes, connects, r, routers, seed, node_processes) for r in sweep),
            Plan("steady", nodes, connects, rate, routers, seed, node_processes),
            Plan("drain", nodes, burst, max(rate, burst / DRAIN_WINDOW_S), routers, seed, node_processes),
            Plan("scale-out", nodes, burst, rate, routers, seed, node_processes)]


async def run_all(url: str, nodes: int, connects: int, burst: int, rate: float, routers: int,
                  seed: int, sweep: tuple[float, ...] = (), node_processes: int = 1) -> list[Result]:
    results = []
    for plan in plans(nodes, connects, burst, rate, routers, seed, sweep, node_processes):
        result = await run_scenario(url, plan)
        print(f"scenario {plan.scenario} at {nodes} nodes, {plan.rate:g}/s: {asdict(result)}", file=sys.stderr)
        results.append(result)
    return results


def table(results: list[Result]) -> list[str]:
    """The scenarios as a markdown table, then the fleet at rest."""
    out = ["| scenario | nodes | connects (failed) | offered / achieved connects/s | Valkey CPU µs / connect "
           "| Valkey µs in commands / connect | commands / connect | p50 ms | p99 ms "
           "| largest node's share / mean | joiners' share | Valkey bytes / node | Valkey bytes / socket "
           "| harness routers CPU µs / connect | harness nodes CPU µs / connect |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in results:
        out.append(f"| {x.scenario} | {x.nodes:,} | {x.connects:,} ({x.failed}) | {x.offered_rate:,.0f} / "
                   f"{x.achieved_rate:,.0f} | {x.cpu_us:,.1f} | {x.command_us:,.1f} | {x.commands:.1f} | "
                   f"{x.p50_ms:.2f} | {x.p99_ms:.2f} | {x.largest_share:.2f} | "
                   f"{x.joiners_share:.1%} | {x.memory_per_node:,.0f} | {x.memory_per_socket:,.0f} | "
                   f"{x.router_cpu_us:,.0f} | {x.nodes_cpu_us:,.0f} |")
    out += ["", "The fleet at rest (measured before each scenario's connects, subtracted from its rows above):", "",
            "| scenario | nodes | Valkey commands / s | Valkey CPU (cores) | simulated nodes' CPU (cores) |",
            "|---|---:|---:|---:|---:|"]
    for x in results:
        out.append(f"| {x.scenario} | {x.nodes:,} | {x.idle_calls_per_s:,.0f} | {x.idle_valkey_cores:.3f} | "
                   f"{x.idle_nodes_cores:.3f} |")
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
        bars = {f"{x.scenario} ({x.nodes:,}, {x.offered_rate:,.0f}/s)": {attr: float(getattr(x, attr))}
                for x in results}
        path = out_dir / f"{name}-{suffix}.svg"
        path.write_text(bar_chart(title, unit, bars, unit=unit, limit=limit, limit_label=label))
        written.append(path)
    return written
