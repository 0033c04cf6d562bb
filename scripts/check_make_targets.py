"""Every pytest command of every Makefile target must collect.

A target's pytest flags are only tried when someone runs that target, so a flag pytest refuses
(``make faults-full`` once passed ``-p no:timeout`` against ``--strict-config``), a marker that is
gone or a moved path would land unnoticed. This asks make for each target's commands (``make -n``:
printed, never run), keeps those that run pytest, and runs each with ``--collect-only -q``.
``make test`` runs it before the tests (``make check-targets``).

    python scripts/check_make_targets.py [--make make] [--makefile Makefile]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULE = re.compile(r"^([a-z][a-z-]*):(?!=)", re.MULTILINE)  # `name:` and not `NAME :=`
# pytest itself, or scripts/compile_relay.py test, which hands what follows to pytest in a compiled copy
PYTEST = re.compile(r"\s(-m pytest|scripts/compile_relay\.py test)(\s|$)")


def targets(makefile: Path) -> list[str]:
    """The named rules of the Makefile, in order (file targets such as the venv stamp have paths)."""
    return list(dict.fromkeys(RULE.findall(makefile.read_text())))


def pytest_commands(make: str, makefile: Path, target: str) -> list[str]:
    """The pytest command lines ``make -n target`` prints (with its prerequisites' commands)."""
    dry = subprocess.run([make, "--no-print-directory", "-f", str(makefile), "-n", target], cwd=ROOT,
                         capture_output=True, text=True, check=False, timeout=60)
    if dry.returncode != 0:
        raise SystemExit(f"make -n {target} failed:\n{dry.stderr}")
    return [line.strip() for line in dry.stdout.splitlines() if PYTEST.search(line)]


def collects(command: str) -> subprocess.CompletedProcess[str]:
    """Runs the command as make would (through the shell), only collecting."""
    return subprocess.run(["/bin/sh", "-c", f"{command} --collect-only -q"], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--make", default="make")
    parser.add_argument("--makefile", type=Path, default=ROOT / "Makefile", help="read from the repository root")
    args = parser.parse_args()
    makefile = args.makefile.resolve()
    by_command: dict[str, list[str]] = {}
    for target in targets(makefile):
        for command in pytest_commands(args.make, makefile, target):
            by_command.setdefault(command, []).append(target)
    if not by_command:
        print("no target runs pytest: the Makefile or this script's reading of it changed", file=sys.stderr)
        return 1
    failed = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # each collection is mostly imports
        results = list(pool.map(collects, by_command))
    for (command, names), result in zip(by_command.items(), results, strict=True):
        # 5 is "no tests collected": a target whose paths or markers select nothing is broken too.
        ok = result.returncode == 0
        print(f"{'ok  ' if ok else 'FAIL'} {', '.join(names)}: {command}")
        if not ok:
            failed += 1
            print("\n".join((result.stdout + result.stderr).strip().splitlines()[-15:]), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
