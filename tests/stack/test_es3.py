"""client/polysocket.js (and its minified build) must parse as ES3, as IE6-8 do; the .d.ts must compile.

Runs client/check-es3.js under node with acorn (``ecmaVersion: 3, allowReserved: "never"``) and also
checks that the committed client/polysocket.js and polysocket.min.js are what client/build.js makes
from client/src/ (the one delivered file is built, never edited by hand).
Needs ``npm ci --prefix client`` (``make deps``); without node or node_modules the tests fail.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "client"


def _need(condition: bool, why: str) -> None:
    """A missing tool fails the test (never a skip): `make deps` installs all of them."""
    if not condition:
        pytest.fail(f"{why}: run `make deps` (it installs Node packages and Debian's chromium)")


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    _need(path is not None, "node is not installed")
    assert path is not None
    _need((CLIENT / "node_modules" / "acorn").is_dir(), "run `npm ci --prefix client` first")
    return path


def test_source_is_es3(node: str) -> None:
    proc = subprocess.run(
        [node, "check-es3.js", "polysocket.js"], cwd=CLIENT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_minified_build_is_es3(node: str) -> None:
    proc = subprocess.run(
        [node, "check-es3.js", "polysocket.min.js"], cwd=CLIENT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checker_rejects_what_ie_rejects(node: str, tmp_path: Path) -> None:
    for bad in ["x.delete = 1;", "var o = {a: 1,};", "var a = [1,];", "var o = {class: 1};", "let x = 1;"]:
        f = tmp_path / "bad.js"
        f.write_text(bad)
        proc = subprocess.run([node, str(CLIENT / "check-es3.js"), str(f)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, f"accepted: {bad}"


@pytest.mark.parametrize("name", ["polysocket.js", "polysocket.min.js"])
def test_committed_build_is_current(node: str, tmp_path: Path, name: str) -> None:
    proc = subprocess.run([node, str(CLIENT / "build.js"), str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    committed = (CLIENT / name).read_text()
    assert (tmp_path / name).read_text() == committed, f"stale client/{name}: run `npm run build --prefix client`"


def test_every_source_part_is_built(node: str) -> None:
    """A file in client/src/ that build.js does not list would be silently left out of the client."""
    build = (CLIENT / "build.js").read_text()
    for part in (CLIENT / "src").glob("*.js"):
        if not part.name.startswith("_"):
            assert f'"{part.stem}"' in build, f"client/src/{part.name} is not in build.js PARTS"


def test_type_declarations_compile(node: str) -> None:
    tsc = CLIENT / "node_modules" / "typescript" / "bin" / "tsc"
    _need(tsc.is_file(), "run `npm ci --prefix client` first")
    proc = subprocess.run(
        [node, str(tsc), "-p", "types-test/tsconfig.json"], cwd=CLIENT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


UNITS = sorted((CLIENT.parent / "tests" / "client_units").glob("*.test.js"))


@pytest.mark.parametrize("script", UNITS, ids=[u.name for u in UNITS])
def test_client_units_under_node(node: str, script: Path) -> None:
    """helpers.test.js: UTF-8 lengths, URL/body budgets, base64, batch frames and the ES3 URL parser,
    checked on seeded random inputs against Node's Buffer, JSON and WHATWG URL, and the
    text/event-stream reader on stream bodies cut at random. relay_choices.test.js: the transport
    and receiver lists, and a relay socket's lifecycle states and the moves between them."""
    proc = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok "), proc.stdout
