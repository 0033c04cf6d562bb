"""The benchmark suite runs end to end in its smallest mode and produces numbers.

No timing is asserted here: benchmarks measure, tests check behaviour. Every system runs, the Node
peers included (``bench/node``, installed by the bench itself from its lock file; ``make deps``
installs it too).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from polysocket_cli.processes import REPO_ROOT

pytestmark = pytest.mark.stack

SVG = "{http://www.w3.org/2000/svg}"


def test_bench_minimal_run_produces_numbers(tmp_path: Path) -> None:
    # every system (`make deps` installs the bench extra: python-socketio; and bench/node's peers)
    systems = ["polysocket", "polysocket-stream", "direct", "engineio", "sockjs-xhr", "sockjs-jsonp", "socketio",
               "engineio-bridge", "sockjs-bridge"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--sessions", "1", "--duration", "1", "--warmup", "0.2",
         "--idle", "5", "--idle-poll-ttl", "500", "--idle-settle", "2", "--router-connects", "3",
         "--stream-bytes", "1000",  # streams end every dozen messages: the client resumes them with its ack
         "--systems", ",".join(systems), "--out", str(tmp_path), "--name", "smoke", "--silent"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    md = (tmp_path / "smoke.md").read_text()
    assert md.startswith("# polysocket benchmark")
    assert "## Targets of issue 12" in md
    assert [x["system"] for x in results["load"]] == systems
    for x in results["load"]:
        assert x["errors"] == 0, x
        assert x["messages"] > 0
        assert math.isfinite(x["server_cpu_us_per_msg"])
        assert x["server_cpu_us_per_msg"] > 0, x  # the server process measured is the one doing the work
        assert math.isfinite(x["rtt"]["p99_ms"])
    stream = next(x for x in results["load"] if x["system"] == "polysocket-stream")
    assert stream["streams_opened"] > 2, stream  # ended by the byte budget and resumed, nothing lost (errors 0)
    assert sorted(x["system"] for x in results["idle"]) == sorted(systems)
    for x in results["idle"]:
        assert x["errors"] == 0, x
        assert math.isfinite(x["server_cpu_us_per_socket_minute"])
        if x["system"] != "direct":  # every receiving session saw a heartbeat (4 periods in the window)
            assert x["sessions_with_heartbeat"] == 5, x
    for bridge in ("engineio-bridge", "sockjs-bridge"):  # both processes charged, and both did work
        x = next(x for x in results["load"] if x["system"] == bridge)
        assert set(x["cpu_us_per_msg"]) == {bridge, "target"}, x
        assert x["cpu_us_per_msg"]["target"] > 0, x  # the echo came through the target, not the bridge
    assert "## Targets of issue 20" in md
    assert "relay-stream against engine.io's whole server: " in md
    assert "polysocket-stream against the engineio-bridge (bridge + target): " in md
    assert md.count("(target ≤ 0.75 x) — **") == 1 and md.count("(target ≤ 0.60 x) — **") == 1  # 1 session only
    assert results["router"]["concurrency_1"]["n"] == 3
    assert results["plots"] == ["smoke-cpu.svg", "smoke-p99.svg", "smoke-idle-memory.svg", "smoke-idle-cpu.svg"]
    for name in results["plots"]:
        root = ET.parse(tmp_path / name).getroot()
        drawn = {g.attrib["data-system"] for g in root.iter(SVG + "g") if g.attrib.get("class") == "series"}
        assert drawn == set(systems), name
        assert f"]({name})" in md


def test_cold_connect_bench_measures_both_variants_through_the_forwarder() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.cold_connect", "--delay-ms", "0,0.05", "--rounds", "2"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| 0")]
    assert [row[0].strip() for row in rows] == ["0 ms", "0.05 ms"]
    for row in rows:
        before, after = float(row[1]), float(row[2])
        assert before > 0 and after > 0
