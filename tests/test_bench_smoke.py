"""The benchmark suite runs end to end in its smallest mode and produces numbers.

No timing is asserted here: benchmarks measure, tests check behaviour.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from polysocket_cli.processes import REPO_ROOT

pytestmark = pytest.mark.stack


def test_bench_minimal_run_produces_numbers(tmp_path: Path) -> None:
    systems = ["polysocket", "direct"]
    if importlib.util.find_spec("socketio") is not None:  # the optional `bench` extra
        systems.append("socketio")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--sessions", "1", "--duration", "1", "--warmup", "0.2",
         "--idle", "5", "--idle-poll-ttl", "500", "--router-connects", "3", "--systems", ",".join(systems),
         "--out", str(tmp_path), "--name", "smoke", "--silent"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.md").read_text().startswith("# polysocket benchmark")
    assert [x["system"] for x in results["load"]] == systems
    for x in results["load"]:
        assert x["errors"] == 0, x
        assert x["messages"] > 0
        assert math.isfinite(x["server_cpu_us_per_msg"])
        assert math.isfinite(x["rtt"]["p99_ms"])
    assert sorted(x["system"] for x in results["idle"]) == sorted(systems)
    assert all(x["errors"] == 0 for x in results["idle"])
    assert results["router"]["concurrency_1"]["n"] == 3
