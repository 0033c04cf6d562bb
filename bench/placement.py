"""The pick's placement rule in a model, without Redis: how many connects the busiest node takes in
a burst, for the rule the pick uses and for the one it replaced, over several seeds.

    python -m bench.placement                 # 1,000 nodes, 10,000 connects, 2,000 connects/s -> stdout

A model of PICK_NODE_LUA's choice (polysocket_core/control.py), not the script: PICK_CHOICES
distinct nodes drawn at random, the winner by the rule; every node heart-beats once a second,
which resets its ``picked`` count to 0 (the loads stay, as the node's sockets do). bench.fleet
measures the script itself, but cannot offer 2,000 connects/s on a small machine, so the interplay
of the rate and the heartbeat, which decides the shares in a burst, is shown here.

Rules: ``picked-then-load`` (the pick: fewer picks since the last heartbeat, then the lower load),
``load`` (the lower load only: the rule before), ``uniform`` (the first candidate: the floor any
random rule meets, since a node's share of a short burst is itself random).

Scenarios: ``drain`` (the nodes 30-70 % full, a burst), ``scale-out`` (the nodes 90 % full, 50
empty nodes join, a burst).
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from polysocket_core.control import PICK_CHOICES

CAPACITY = 10_000
JOINERS = 50
HEARTBEAT_S = 1.0

Rule = Callable[[int, list[int], list[int]], tuple[int, ...]]  # candidate, picked, sockets -> sort key
RULES: dict[str, Rule] = {
    "picked-then-load": lambda i, picked, sockets: (picked[i], sockets[i]),
    "load": lambda i, picked, sockets: (sockets[i],),
    "uniform": lambda i, picked, sockets: (0,),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    largest_share: float  # the busiest node's connects / the mean
    joiners_share: float  # the empty nodes' connects together / all


def fleet(scenario: str, nodes: int, rng: random.Random) -> tuple[list[int], int]:
    """Sockets per node at the start, and how many of them (the last) joined empty."""
    if scenario == "drain":
        return [int(CAPACITY * rng.uniform(0.3, 0.7)) for _ in range(nodes)], 0
    return [CAPACITY * 9 // 10] * nodes + [0] * JOINERS, JOINERS


def burst(rule: Rule, sockets: list[int], joiners: int, connects: int, rate: float,
          rng: random.Random) -> Outcome:
    n = len(sockets)
    picked = [0] * n
    taken = [0] * n
    per_beat = max(1, round(rate * HEARTBEAT_S))
    for c in range(connects):
        if c % per_beat == 0:
            picked = [0] * n  # every node's heartbeat in that second (their phases do not matter here)
        # A stable sort: on equal keys the first drawn candidate wins, as the script's strict "<".
        best = min(rng.sample(range(n), PICK_CHOICES), key=lambda i: rule(i, picked, sockets))
        picked[best] += 1
        sockets[best] += 1
        taken[best] += 1
    return Outcome(max(taken) / (connects / n), sum(taken[n - joiners:]) / connects if joiners else 0.0)


def run(scenario: str, rule: str, nodes: int, connects: int, rate: float, seeds: int) -> Outcome:
    """The median over ``seeds`` runs (each seed: its own fleet and draws)."""
    outcomes = []
    for seed in range(seeds):
        rng = random.Random(seed)
        sockets, joiners = fleet(scenario, nodes, rng)
        outcomes.append(burst(RULES[rule], sockets, joiners, connects, rate, rng))
    return Outcome(statistics.median(o.largest_share for o in outcomes),
                   statistics.median(o.joiners_share for o in outcomes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--connects", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=2000.0, help="connects per second (heartbeats: one a second)")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    print(f"`python -m bench.placement --nodes {args.nodes} --connects {args.connects} --rate {args.rate:g} "
          f"--seeds {args.seeds}` (medians over the seeds)\n")
    print("| scenario | rule | largest node's share / mean | the 50 joiners' share |")
    print("|---|---|---:|---:|")
    for scenario in ("drain", "scale-out"):
        for rule in RULES:
            o = run(scenario, rule, args.nodes, args.connects, args.rate, args.seeds)
            joiners = f"{o.joiners_share:.1%}" if scenario == "scale-out" else "-"
            print(f"| {scenario} | {rule} | {o.largest_share:.2f} | {joiners} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
