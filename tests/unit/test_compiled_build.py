"""The relay's two builds (relay_node/compiled.py): the suite knows which one it tests.

`make compiled` runs the suite again against the hot modules compiled by mypyc
(scripts/compile_relay.py test) and says so with POLYSOCKET_EXPECT_COMPILED=1; every other run
expects the sources. Either way a run that tested the other build than it meant to fails here: a
compiled copy left in a checkout would otherwise shadow every later edit, and a compiled run that
quietly fell back to the sources would prove nothing."""

from __future__ import annotations

import importlib
import importlib.util
import os
import types
from pathlib import Path

import pytest

from relay_node.compiled import HOT_MODULES, build_summary, is_compiled, summary

ROOT = Path(__file__).resolve().parents[2]


def test_the_run_tests_the_build_it_means_to() -> None:
    expected = os.environ.get("POLYSOCKET_EXPECT_COMPILED") == "1"
    modules = {name: importlib.import_module(name) for name in HOT_MODULES}
    wrong = [name for name, module in modules.items() if is_compiled(module) is not expected]
    assert wrong == [], f"{'interpreted' if expected else 'compiled'} where the run expects otherwise: {wrong}"
    assert build_summary() == (f"compiled by mypyc ({len(HOT_MODULES)} hot modules)" if expected
                               else "interpreted (no mypyc build)")


def test_every_hot_module_is_a_source_file_under_strict_typing() -> None:
    for name in HOT_MODULES:
        source = ROOT / (name.replace(".", "/") + ".py")
        assert source.is_file(), name
    assert "relay_node.compiled" not in HOT_MODULES  # it must tell the build, not be part of it


def test_the_start_log_names_a_partial_build() -> None:
    def fake(name: str, suffix: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__file__ = f"/x/{name.rsplit('.', 1)[-1]}{suffix}"
        return module

    ext = ".cpython-311-x86_64-linux-gnu.so"
    first, second, *_ = HOT_MODULES
    assert summary({first: fake(first, ext), second: fake(second, ".py")}) == f"partly compiled; interpreted: {second}"
    assert summary({first: fake(first, ext), second: fake(second, ext)}) == "compiled by mypyc (2 hot modules)"
    assert summary({first: fake(first, ".py")}) == "interpreted (no mypyc build)"
    assert not is_compiled(types.ModuleType("no_file"))


def test_the_compile_script_hands_every_argument_after_test_to_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make compiled` runs `compile_relay.py test --ignore=...`: options after `test` are pytest's."""
    spec = importlib.util.spec_from_file_location("compile_relay", ROOT / "scripts" / "compile_relay.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    seen: list[list[str]] = []
    monkeypatch.setattr(script, "test", lambda args: seen.append(args) or 0)
    assert script.main(["test", "--ignore=tests/browser", "-k", "x"]) == 0
    assert seen == [["--ignore=tests/browser", "-k", "x"]]
