"""Regenerates the network matrix's table in docs/client.md (issue 17, item 6): runs
test_network_matrix.py's timed sockets on every engine at once (one pytest per engine, as ``make
pytest`` does), collects the figures each cell wrote, and rewrites the table between its markers.

    .venv/bin/python tests/browser/matrix_report.py              # run, then rewrite (make network-table)
    .venv/bin/python tests/browser/matrix_report.py --from DIR   # rewrite from figures already written

The figures are one run's, on a shared machine: they say which path a cell takes and its order of
magnitude, not a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from differences import exclusion

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOC = ROOT / "docs" / "client.md"
START, END = "<!-- network-table:start -->", "<!-- network-table:end -->"
ENGINES = ("chromium", "firefox", "webkit")
NETWORKS = ("direct", "squid", "privoxy", "nginx", "squid-tls")  # networks.py's order


def run(out: Path) -> None:
    """One pytest per engine, at once; each cell writes ``{engine}.{network}.json`` into ``out``."""
    env = {**os.environ, "PSTEST_MATRIX_FIGURES": str(out)}
    procs = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", str(HERE / "test_network_matrix.py"),
                               "--engine", engine, "-k", "test_first_and_second_socket"], cwd=ROOT, env=env)
             for engine in ENGINES]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"the matrix's figures did not all pass (exit codes {codes}): docs left as they were")


def path_text(socket: dict[str, object]) -> str:
    """"native", or the fallback's transport and receiver ("xhr, stream")."""
    return "native" if socket["transport"] == "websocket" else f"{socket['transport']}, {socket['receiver']}"


def cell_text(sockets: list[dict[str, object]]) -> str:
    kinds = list(dict.fromkeys(path_text(s) for s in sockets))
    opened = " · ".join(f"{float(str(s['open_ms'])):.0f}" for s in sockets)
    first = " · ".join(f"{float(str(s['first_message_ms'])):.0f}" for s in sockets)
    return f"{' · '.join(kinds)}: open {opened} ms, first message {first} ms"


def table(figures: Path) -> str:
    rows = ["| engine | " + " | ".join(NETWORKS) + " |", "|---|" + "---|" * len(NETWORKS)]
    for engine in ENGINES:
        cells = []
        for network in NETWORKS:
            path = figures / f"{engine}.{network}.json"
            if path.exists():
                cells.append(cell_text(json.loads(path.read_text())["sockets"]))
            elif exclusion("test_network_matrix.py::test_first_and_second_socket", engine, (network,)):
                cells.append("not run (`tests/browser/differences.py`)")
            else:
                cells.append("not run")
        rows.append(f"| {engine} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def rewrite(doc: Path, text: str) -> None:
    before, start, rest = doc.read_text(encoding="utf-8").partition(START)
    _, end, after = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{doc}: markers {START} ... {END} not found")
    doc.write_text(f"{before}{START}\n{text}\n{END}{after}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="figures already written (skip the run)")
    args = parser.parse_args()
    if args.source:
        rewrite(DOC, table(args.source))
        return
    with tempfile.TemporaryDirectory(prefix="ps-matrix-") as tmp:
        run(Path(tmp))
        rewrite(DOC, table(Path(tmp)))
    print(f"{DOC.relative_to(ROOT)}: network table rewritten")


if __name__ == "__main__":
    main()
