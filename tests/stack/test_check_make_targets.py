"""scripts/check_make_targets.py, on Makefiles written here: it must fail a target whose pytest flags do not
collect (the way `make faults-full` once broke), pass ones that do, and refuse a Makefile with no pytest at all
(a check that finds nothing to check would pass forever)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from polysocket_cli.processes import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "check_make_targets.py"
ONE_FILE = "tests/unit/test_core_edge.py"  # small, so each collection is quick


def check(tmp_path: Path, makefile: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "Makefile"
    path.write_text(makefile)
    return subprocess.run([sys.executable, str(SCRIPT), "--makefile", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_target_that_does_not_collect_fails_the_check_and_one_that_does_passes(tmp_path: Path) -> None:
    result = check(tmp_path, f"PY := {sys.executable}\n"
                             f"good:\n\tPSTEST_X=1 $(PY) -m pytest {ONE_FILE} -q\n"
                             f"broken: good\n\t$(PY) -m pytest {ONE_FILE} -p no:timeout\n"
                             f"none:\n\t$(PY) -m pytest -m faults {ONE_FILE}\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"ok   good, broken: PSTEST_X=1 {sys.executable} -m pytest {ONE_FILE} -q",
        f"FAIL broken: {sys.executable} -m pytest {ONE_FILE} -p no:timeout",  # flags pytest refuses
        f"FAIL none: {sys.executable} -m pytest -m faults {ONE_FILE}",  # a marker that selects nothing
    ]
    assert "Unknown config option: timeout" in result.stderr


def test_a_makefile_without_pytest_is_refused(tmp_path: Path) -> None:
    result = check(tmp_path, "lint:\n\truff check .\n")
    assert result.returncode == 1 and "no target runs pytest" in result.stderr
