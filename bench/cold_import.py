"""Cold import of the router's Lambda entry point, against a baseline interpreter in the same run.

    python -m bench.cold_import                    # 9 runs of each, markdown on stdout
    python -m bench.cold_import --runs 15 --out bench/results/cold-import.md

Each run is a fresh ``python -I -S -B`` (no site, no user site, no bytecode writing: as in the
Lambda runtime, where ``/var/task`` is read-only) whose ``sys.path`` is a copy of what the Lambda
zip holds (``--layout package``, the default): ``router_fn``, ``polysocket_core`` and
``polysocket_redis`` from this checkout plus the installed files of the runtime distributions
``scripts/build_lambda.py`` ships
(fastapi, mangum, redis, orjson and, recursively, their required dependencies, no extras),
compiled with ``unchecked-hash`` bytecode as that script does. It is assembled from this venv, so
it needs no network, and what the venv has only for development is not on the path.
``--layout venv`` uses the checkout and the whole venv instead.

It times, inside the process, ``import router_fn.handler`` (which builds the FastAPI app and the
Mangum handler) and, as the baseline, ``import json``; runs alternate (in a random order when
``--compare`` adds a second tree), so all see the same machine load. It reports the medians and
the difference of the whole-process times, and the slowest top-level packages from one
``-X importtime`` run. ``POLYSOCKET_REDIS_URL`` points at a closed loopback port: an import that
did I/O would fail.

``scripts/build_lambda.py`` measures the zip it builds (from the package index) the same way.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import py_compile
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_REDIS_URL = "redis://127.0.0.1:1/0"
RUNTIME_DISTS = ("fastapi", "mangum", "redis", "orjson")  # as scripts/build_lambda.py
PROJECT_PACKAGES = ("router_fn", "polysocket_core", "polysocket_redis")


def _required(dist: metadata.Distribution) -> list[str]:
    """Names of the distributions ``dist`` requires unconditionally (no extras) on this Python."""
    from packaging.requirements import Requirement

    names = []
    for raw in dist.requires or []:
        req = Requirement(raw)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def compile_tree(dest: Path) -> None:
    if not compileall.compile_dir(str(dest), quiet=1, workers=0,
                                  invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH):
        raise SystemExit("compileall failed")


def copy_project(root: Path, dest: Path) -> None:
    for pkg in PROJECT_PACKAGES:
        if (root / pkg).is_dir():  # an older tree (--compare) may predate a package
            shutil.copytree(root / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    compile_tree(dest)


def assemble_package(dest: Path) -> list[str]:
    """Copy the runtime distributions' installed files into ``dest``."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(RUNTIME_DISTS)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        dist = metadata.distribution(name)
        seen[name] = dist
        todo.extend(_required(dist))
    for dist in seen.values():
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f)))
            if f.parts[0] in ("..", "bin") or "__pycache__" in f.parts or not src.is_file():
                continue
            out = dest / f
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
    compile_tree(dest)
    return sorted(seen)

SNIPPET = r"""
import sys, time
sys.path[:0] = sys.argv[2:]
t0, c0 = time.perf_counter(), time.process_time()
if sys.argv[1] == "handler":
    import router_fn.handler as m
    assert callable(m.handler)
else:
    import json
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def one_run(what: str, paths: list[str], extra: list[str] | None = None) -> tuple[float, float, float, str]:
    """(import seconds, import CPU seconds, whole-process seconds, stderr) of one fresh interpreter.
    CPU time is what a shared, loaded machine distorts least: wall time also counts waiting for a core."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "POLYSOCKET_REDIS_URL": NO_REDIS_URL}
    cmd = [sys.executable, "-I", "-S", "-B", *(extra or []), "-c", SNIPPET, what, *paths]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd="/")
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{what} import failed:\n{out.stderr}")
    import_s, cpu_s = (float(x) for x in out.stdout.strip().splitlines()[-1].split())
    return import_s, cpu_s, wall, out.stderr


def top_packages(importtime: str, n: int = 10) -> list[tuple[str, float]]:
    """Self time summed per top-level package (ms), from ``-X importtime`` output."""
    totals: dict[str, int] = {}
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            self_us, _cum, name = (p.strip() for p in line[len("import time:"):].split("|"))
        except ValueError:
            continue
        top = name.split(".")[0]
        totals[top] = totals.get(top, 0) + int(self_us)
    return [(k, v / 1000) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:n]]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=9, help="fresh interpreters per measurement (median)")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--label", default="", help="a note for the report (e.g. the commit measured)")
    ap.add_argument("--layout", choices=("package", "venv"), default="package",
                    help="sys.path: a copy of the Lambda package's contents (default), or checkout + venv")
    ap.add_argument("--compare", type=Path, metavar="DIR",
                    help="another tree with router_fn/ and polysocket_core/ (e.g. `git archive` of an older "
                         "commit): its handler import is measured too, interleaved, against the same deps")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cold-import-") as tmp:
        roots = {"this checkout": ROOT, **({f"`{args.compare}`": args.compare.resolve()} if args.compare else {})}
        if args.layout == "package":
            deps = Path(tmp) / "deps"
            dists = assemble_package(deps)
            layout = "Lambda package layout: " + ", ".join(PROJECT_PACKAGES) + " + " + ", ".join(dists)
            trees = {}
            for i, (label, root) in enumerate(roots.items()):
                copy_project(root, Path(tmp) / f"project{i}")
                trees[label] = [str(Path(tmp) / f"project{i}"), str(deps)]
        else:
            site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
            layout = "checkout + the whole venv"
            trees = {label: [str(root), *site] for label, root in roots.items()}
        return measure(args, trees, layout)


def row(label: str, values: list[float], bold: bool = False) -> str:
    med = f"{statistics.median(values) * 1000:.1f} ms"
    return (f"| {label} | {f'**{med}**' if bold else med} | {min(values) * 1000:.1f} ms | "
            f"{max(values) * 1000:.1f} ms |")


def measure(args: argparse.Namespace, trees: dict[str, list[str]], layout: str) -> int:
    load_before = loadavg()
    paths = next(iter(trees.values()))
    for tree in trees.values():
        one_run("handler", tree)  # warm the page cache first
    base: list[float] = []
    base_wall: list[float] = []
    handler: dict[str, list[float]] = {label: [] for label in trees}
    handler_cpu: dict[str, list[float]] = {label: [] for label in trees}
    handler_wall: dict[str, list[float]] = {label: [] for label in trees}
    for _ in range(args.runs):
        t, _, w, _ = one_run("json", paths)
        base.append(t)
        base_wall.append(w)
        for label, tree in random.sample(list(trees.items()), len(trees)):  # no fixed order
            t, c, w, _ = one_run("handler", tree)
            handler[label].append(t)
            handler_cpu[label].append(c)
            handler_wall[label].append(w)
    _, _, _, importtime = one_run("handler", paths, ["-X", "importtime"])
    med = statistics.median

    lines = [
        "# Router Lambda handler: cold import",
        "",
        f"`python -m bench.cold_import --runs {args.runs}`" + (f" ({args.label})" if args.label else ""),
        "",
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average before {load_before}, after {loadavg()}.",
        "",
        f"`sys.path`: {layout}.",
        "",
        "| measured in a fresh `python -I -S -B` | median | min | max |",
        "|---|---:|---:|---:|",
        *(row(f"`import router_fn.handler` (in-process), {label}", v, bold=True) for label, v in handler.items()),
        *(row(f"`import router_fn.handler`, CPU time, {label}", v, bold=True) for label, v in handler_cpu.items()),
        row("baseline `import json` (in-process)", base),
        *(row(f"whole process, handler, {label}", v) for label, v in handler_wall.items()),
        row("whole process, baseline (interpreter start + `import json`)", base_wall),
        *(f"| whole process, handler minus baseline (medians), {label} | "
          f"**{(med(v) - med(base_wall)) * 1000:.1f} ms** | | |" for label, v in handler_wall.items()),
        "",
        "Slowest top-level packages for this checkout (self time summed, one `-X importtime` run, which "
        "itself adds overhead):",
        "",
        ", ".join(f"{name} {ms:.1f} ms" for name, ms in top_packages(importtime)),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
