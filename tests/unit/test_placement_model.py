"""bench.placement: the pick's rule in a model (no Redis) keeps the busiest node of a burst under
2 x the mean share where the rule by load alone gave about 3 x (seeded: the same draws each run).
The script itself is measured by bench.fleet and its guarantees by tests/stack/test_pick.py."""

from __future__ import annotations

import pytest

from bench.placement import JOINERS, run


@pytest.mark.parametrize("scenario", ["drain", "scale-out"])
def test_the_pick_rule_spreads_a_burst(scenario: str) -> None:
    # 200 nodes, 2,000 connects at 400 connects/s: two per node between two heartbeats, as in issue
    # 19's burst (10,000 sockets back in 5 s to 1,000 nodes).
    pick = run(scenario, "picked-then-load", 200, 2000, 400.0, 3)
    by_load = run(scenario, "load", 200, 2000, 400.0, 3)
    assert pick.largest_share <= 2.0 < by_load.largest_share, (pick, by_load)
    if scenario == "scale-out":  # the empty nodes still fill faster than the others, without a herd
        assert JOINERS / (200 + JOINERS) < pick.joiners_share < by_load.joiners_share


def test_at_a_low_rate_the_load_decides() -> None:
    """Far below a connect per node per heartbeat, picked counts are all 0: the rule is the load's."""
    assert run("drain", "picked-then-load", 200, 500, 1.0, 2) == run("drain", "load", 200, 500, 1.0, 2)
