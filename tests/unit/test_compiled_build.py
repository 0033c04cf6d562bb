"""The relay's two builds (relay_node/compiled.py): the suite knows which one it tests.

`make compiled` runs tests/unit again against the hot modules compiled by mypyc
(scripts/compile_relay.py) and says so with POLYSOCKET_EXPECT_COMPILED=1; every other run expects the
sources. Either way a run that tested the other build than it meant to fails here: a compiled copy
left in a checkout would otherwise shadow every later edit, and a compiled run that quietly fell
back to the sources would prove nothing."""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest

from relay_node import compiled
from relay_node.compiled import HOT_MODULES, build_summary, is_compiled

ROOT = Path(__file__).resolve().parents[2]


def test_the_run_tests_the_build_it_means_to() -> None:
    expected = os.environ.get("POLYSOCKET_EXPECT_COMPILED") == "1"
    for name in HOT_MODULES:
        importlib.import_module(name)
    wrong = [name for name in HOT_MODULES if is_compiled(name) is not expected]
    assert wrong == [], f"{'interpreted' if expected else 'compiled'} where the run expects otherwise: {wrong}"
    assert build_summary().startswith("compiled" if expected else "interpreted")


def test_every_hot_module_is_a_source_file_under_strict_typing() -> None:
    for name in HOT_MODULES:
        source = ROOT / (name.replace(".", "/") + ".py")
        assert source.is_file(), name
    assert "relay_node.compiled" not in HOT_MODULES  # it must tell the build, not be part of it


def test_the_start_log_names_a_partial_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(name: str, suffix: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__file__ = f"/x/{name.rsplit('.', 1)[-1]}{suffix}"
        return module

    ext = ".cpython-311-x86_64-linux-gnu.so"
    first, second, *_ = HOT_MODULES
    monkeypatch.setattr(sys, "modules", {first: fake(first, ext), second: fake(second, ".py")})
    assert build_summary() == f"partly compiled; interpreted: {second}"
    monkeypatch.setattr(sys, "modules", {first: fake(first, ext), second: fake(second, ext)})
    assert build_summary() == "compiled by mypyc (2 hot modules)"
    monkeypatch.setattr(sys, "modules", {first: fake(first, ".py")})
    assert build_summary() == "interpreted (no mypyc build)"
    assert compiled.is_compiled("not.imported") is False
