#!/usr/bin/env python3
"""Compile the relay's hot modules with mypyc: extension modules beside their sources.

    python scripts/compile_relay.py build SRC --into SITE   # SRC's sources, installed in SITE
    python scripts/compile_relay.py tree DIR                # copy this checkout to DIR, build there
    python scripts/compile_relay.py test [ARGS...]          # tree build/compiled, then pytest ARGS

``build`` is what the relay image's build stage runs: it compiles the sources the wheel was built
from and puts the extension modules beside the same sources installed in the image's venv. (mypy
must not run inside a site-packages: it would take every installed module for the project's own.)

``test`` is what ``make compiled`` runs (``tests/unit`` unless ARGS name tests): the tests run once
more against the compiled modules, in a copy, so the checkout is never touched. pytest runs in the
copy with the copy first on ``PYTHONPATH`` (the processes tests start import it too) and with
``POLYSOCKET_EXPECT_COMPILED=1``, which ``tests/unit/test_compiled_build.py`` holds the run to.

The modules are ``relay_node.compiled.HOT_MODULES``. An extension module shadows the ``.py`` beside
it (Python's path finder tries extensions first), so nothing else changes.

Needs a C compiler, Python's headers and mypy (which carries mypyc) in the interpreter that runs it,
which must be the Python version the relay runs on. Without ``--into``, a checkout is refused:
extension modules beside its sources would shadow every later edit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
# What the compiled test run needs from the checkout besides the packages: its tests and their
# configuration, the client files tests read, and the Node trees the tests' targets use.
TREE_SKIP = {".git", ".venv", "build", "dist", "localstack", ".mypy_cache", ".pytest_cache", ".ruff_cache",
             ".hypothesis", "__pycache__", "polysocket.egg-info"}
LINKED = ("node_modules", "tests/targets/node_modules", "client/node_modules", "bench/node/node_modules")


def hot_modules() -> tuple[str, ...]:
    sys.path.insert(0, str(CHECKOUT))
    try:
        from relay_node.compiled import HOT_MODULES
    finally:
        sys.path.pop(0)
    return HOT_MODULES


def build(root: Path, *, into: Path | None = None, jobs: int = 2) -> list[Path]:
    """Compile the hot modules whose sources are under ``root``; the extension modules go beside the
    sources, or into ``into`` (a site-packages holding the same sources, which is checked)."""
    root = root.resolve()
    dest_root = (into or root).resolve()
    if into is None and (root / ".git").exists():
        raise SystemExit(f"compile_relay: {root} is a checkout; use `tree DIR` or `--into SITE` (compiled modules "
                         "beside its sources would shadow every later edit)")
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]  # what setuptools runs
    if shutil.which(compiler) is None:
        raise SystemExit(f"compile_relay: no C compiler ({compiler}) on PATH: apt-get install gcc")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        raise SystemExit(f"compile_relay: {headers} is missing: apt-get install python3-dev (Debian's Python)")
    sources = [root / (name.replace(".", "/") + ".py") for name in hot_modules()]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise SystemExit("compile_relay: not found under " + str(root) + ": " + ", ".join(missing))
    if into is not None:
        def installed(source: Path) -> bytes | None:
            path = into / source.relative_to(root)
            return path.read_bytes() if path.is_file() else None

        differ = [str(s.relative_to(root)) for s in sources if installed(s) != s.read_bytes()]
        if differ:
            raise SystemExit(f"compile_relay: {into} does not hold these sources as {root} has them: "
                             + ", ".join(differ))
    # mypyc type-checks what it compiles with the project's strict settings (pyproject.toml). The build
    # runs in a temporary directory, not in ROOT: in a site-packages, mypy would take every installed
    # module for the project's own. Module names follow the paths (mypy walks up the packages).
    with tempfile.TemporaryDirectory(prefix="mypyc-") as scratch:
        work = Path(scratch)
        setup = work / "setup.py"
        setup.write_text(
            "from setuptools import Distribution\n"
            "from mypyc.build import mypycify\n"
            f"paths = {[str(s) for s in sources]!r}\n"
            f"opts = ['--config-file', {str(CHECKOUT / 'pyproject.toml')!r}]\n"
            # a Distribution of its own: setup() would read a pyproject.toml, which is not this build's
            "dist = Distribution({'name': 'polysocket-relay-compiled',\n"
            "                     'ext_modules': mypycify(opts + paths, opt_level='3', target_dir='c')})\n"
            f"dist.script_args = ['build_ext', '--parallel', '{jobs}', '--build-temp', 'temp', '--build-lib', 'lib']\n"
            "dist.parse_command_line()\n"
            "dist.run_commands()\n")
        done = subprocess.run([sys.executable, str(setup)], cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode:
            raise SystemExit(done.stdout + f"\ncompile_relay: mypyc failed (exit {done.returncode})")
        built = []
        for ext in sorted((work / "lib").rglob("*.so")):  # each beside its source, the shared library at the top
            dest = dest_root / ext.relative_to(work / "lib")
            shutil.copy2(ext, dest)
            built.append(dest)
    expected = {dest_root / s.relative_to(root).with_suffix("") for s in sources}
    modules = {p.parent / p.name.split(".", 1)[0] for p in built}
    if not expected <= modules:
        raise SystemExit(f"compile_relay: mypyc built {sorted(map(str, built))}, not every hot module")
    verify(dest_root)
    return built


def verify(dest_root: Path) -> None:
    """Import every hot module from ``dest_root`` in a fresh interpreter that ignores ``PYTHONPATH``
    (where a build may have put mypy): each must load compiled, with nothing of mypy's needed."""
    names = hot_modules()
    probe = ("import sys\n"
             f"sys.path.insert(0, {str(dest_root)!r})\n"
             "from relay_node.compiled import build_summary\n"
             "print(build_summary())\n")
    with tempfile.TemporaryDirectory() as elsewhere:
        done = subprocess.run([sys.executable, "-I", "-c", probe], cwd=elsewhere, capture_output=True, text=True)
    summary = done.stdout.strip()
    if done.returncode or summary != f"compiled by mypyc ({len(names)} hot modules)":
        raise SystemExit(f"compile_relay: the build does not load compiled: {summary}\n{done.stderr[-3000:]}")
    print("compile_relay:", summary, file=sys.stderr)


TREE_MARK = ".polysocket-compiled-tree"  # written into every copy: only such a directory is replaced


def tree(target: Path) -> Path:
    """Copy this checkout (without venvs, caches and the LocalStack tools) to ``target`` and build there;
    the Node trees are linked, not copied. ``target`` must be new, empty or an earlier copy: it is
    replaced, so anything else (the checkout, a parent of it, a home) is refused."""
    target = target.resolve()
    if target == CHECKOUT or target in CHECKOUT.parents or target == Path.home():
        raise SystemExit(f"compile_relay: refusing to replace {target}")
    if target.exists() and any(target.iterdir()) and not (target / TREE_MARK).is_file():
        raise SystemExit(f"compile_relay: {target} is not empty and not an earlier copy (no {TREE_MARK}): "
                         "refusing to replace it")
    linked = {CHECKOUT / rel for rel in LINKED}

    def skipped(directory: str, names: list[str]) -> list[str]:
        here = Path(directory)
        return [n for n in names if n in TREE_SKIP or here / n in linked]

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(CHECKOUT, target, symlinks=True, ignore=skipped)
    (target / TREE_MARK).write_text(f"a copy of {CHECKOUT} for the relay's mypyc build; replaced by the next\n")
    for rel in LINKED:
        if (CHECKOUT / rel).exists():
            (target / rel).symlink_to(CHECKOUT / rel)
    build(target)
    return target


def test(pytest_args: list[str]) -> int:
    """Build the copy in ``build/compiled`` and run pytest there against it."""
    copy = tree(CHECKOUT / "build" / "compiled")
    env = dict(os.environ, POLYSOCKET_EXPECT_COMPILED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *(pytest_args or ["tests/unit"])]
    print("compile_relay: in", copy, ":", " ".join(command), flush=True)
    return subprocess.run(command, cwd=copy, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test"]:  # everything after it is pytest's, options included (argparse would claim them)
        return test(argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="compile the sources under ROOT, beside them or --into a site-packages")
    p_build.add_argument("root", type=Path)
    p_build.add_argument("--into", type=Path, metavar="SITE",
                         help="put the extension modules here (a site-packages where the same sources are installed)")
    p_tree = sub.add_parser("tree", help="copy this checkout to DIR (new, empty or an earlier copy) and compile there")
    p_tree.add_argument("dir", type=Path)
    sub.add_parser("test", help="tree build/compiled, then pytest there with the arguments that follow "
                                "(default: tests/unit)")
    args = parser.parse_args(argv)
    if args.command == "build":
        for path in build(args.root, into=args.into):
            print(path)
    else:
        print(tree(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
