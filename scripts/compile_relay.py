#!/usr/bin/env python3
"""Compile the relay's hot modules with mypyc, in place, beside their sources.

    python scripts/compile_relay.py build ROOT       # ROOT holds the packages: a venv's site-packages
    python scripts/compile_relay.py tree DIR         # copy this checkout to DIR, then build there

``build`` is what the relay image's build stage runs on its installed packages; ``tree`` is what
``make compiled`` runs, so the unit tests run once more against the compiled modules without touching
the checkout. The modules are ``relay_node.compiled.HOT_MODULES``; an extension module shadows the
``.py`` beside it (Python's path finder tries extensions first), so nothing else changes.

Needs a C compiler, Python's headers and mypy (which carries mypyc). A checkout is refused as ROOT:
extension modules there would silently shadow every later edit of the sources.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
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


def build(root: Path, *, jobs: int = 2) -> list[Path]:
    """Compile the hot modules found under ``root`` into extension modules beside them."""
    root = root.resolve()
    if (root / ".git").exists():
        raise SystemExit(f"compile_relay: {root} is a checkout; use `tree DIR` (compiled modules would "
                         "shadow its sources)")
    sources = [root / (name.replace(".", "/") + ".py") for name in hot_modules()]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise SystemExit("compile_relay: not found under " + str(root) + ": " + ", ".join(missing))
    # mypyc type-checks what it compiles with the project's strict settings (pyproject.toml); the
    # setup script runs in ROOT so that module names follow the paths, and builds in a temporary
    # directory so that ROOT receives the extension modules and nothing else.
    with tempfile.TemporaryDirectory(prefix="mypyc-") as scratch:
        setup = Path(scratch) / "setup.py"
        setup.write_text(
            "from setuptools import Distribution\n"
            "from mypyc.build import mypycify\n"
            f"paths = {[str(s.relative_to(root)) for s in sources]!r}\n"
            f"opts = ['--config-file', {str(CHECKOUT / 'pyproject.toml')!r}]\n"
            # a Distribution of its own: setup() would read ROOT's pyproject.toml, which is not this build's
            "dist = Distribution({'name': 'polysocket-relay-compiled',\n"
            "                     'ext_modules': mypycify(opts + paths, opt_level='3')})\n"
            f"dist.script_args = ['build_ext', '--inplace', '--parallel', '{jobs}',\n"
            f"                    '--build-temp', {str(Path(scratch) / 'temp')!r}]\n"
            "dist.parse_command_line()\n"
            "dist.run_commands()\n")
        env = dict(os.environ, MYPYC_OPT_LEVEL="3")
        done = subprocess.run([sys.executable, str(setup)], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode:
            raise SystemExit(done.stdout + f"\ncompile_relay: mypyc failed (exit {done.returncode})")
        shutil.rmtree(root / "build", ignore_errors=True)  # mypyc's generated C, not needed at run time
    built = sorted(p for p in root.glob("*.so") if "__mypyc" in p.name)
    built += [next(s.parent.glob(s.stem + ".*.so")) for s in sources]
    return built


def tree(target: Path) -> Path:
    """Copy this checkout (without venvs, caches and the LocalStack tools) to ``target`` and build there;
    the Node trees are linked, not copied."""
    target = target.resolve()
    linked = {CHECKOUT / rel for rel in LINKED}

    def skipped(directory: str, names: list[str]) -> list[str]:
        here = Path(directory)
        return [n for n in names if n in TREE_SKIP or here / n in linked]

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(CHECKOUT, target, symlinks=True, ignore=skipped)
    for rel in LINKED:
        if (CHECKOUT / rel).exists():
            (target / rel).symlink_to(CHECKOUT / rel)
    build(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="compile in place under ROOT (a site-packages)")
    p_build.add_argument("root", type=Path)
    p_tree = sub.add_parser("tree", help="copy this checkout to DIR and compile there")
    p_tree.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        for path in build(args.root):
            print(path)
    else:
        print(tree(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
