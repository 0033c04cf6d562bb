"""``python -m bench.fleet --quick`` runs end to end (the pick table and the whole-connect scenarios),
so the simulation cannot rot between the runs recorded in bench/results/fleet.md. Its numbers are
not asserted (the machine is shared); what it must produce is."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.fleet import main
from bench.fleet_scenarios import SCENARIOS

pytestmark = pytest.mark.stack


def test_quick_mode_measures_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "fleet.md"
    assert main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| new | 10 |" in text and "| old | 10 |" in text
    results = json.loads(out.with_suffix(".json").read_text())
    assert [r["scenario"] for r in results] == list(SCENARIOS)
    for r in results:
        assert r["connects"] == 200 and r["failed"] == 0, r
        # Every connect costs Redis work beyond the pick: admission, replies, the node's BLPOP.
        assert r["commands"] > 23 and math.isfinite(r["p99_ms"]) and r["largest_share"] >= 1.0
        assert r["memory_per_node"] > 0
        assert f"| {r['scenario']} | 10 |" in text
    joiners = {r["scenario"]: r["joiners_share"] for r in results}
    assert joiners["steady"] == 0 and joiners["scale-out"] > 0  # the 50 empty nodes were picked
    for chart in ("cpu", "commands", "p99", "share"):
        svg = (tmp_path / f"fleet-{chart}.svg").read_text()
        assert svg.count('class="series"') == len(SCENARIOS)
