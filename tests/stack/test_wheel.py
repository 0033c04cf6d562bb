"""``polysocket dev`` from a wheel, as a user gets it from ``pip install 'polysocket[dev]'``: a fresh
virtualenv outside the checkout with nothing but the wheel and its dependencies (from the package
index), started from an empty directory. Catches files the wheel forgets (client, demo page) and
code that looks for the repository."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from polysocket_cli.processes import REPO_ROOT
from tests.support.ports import free_port_block
from tests.support.processes import Output, curl

# Building the wheel and installing its dependencies into a fresh venv takes minutes on a busy machine.
pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work),
                    str(REPO_ROOT)], check=True, timeout=300)
    [wheel] = work.glob("polysocket-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[dev]"],
                   check=True, timeout=600)
    return venv


def clean_env() -> dict[str, str]:
    """No PYTHONPATH, no POLYSOCKET_* and no virtualenv of the checkout leaks into the child."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("POLYSOCKET_", "PYTHON", "VIRTUAL_ENV"))}


def test_wheel_carries_client_and_no_checkout_paths(wheel_venv: Path) -> None:
    code = ("import polysocket_cli.processes as p, pathlib; d = p.client_dir(); "
            "print(d); print(sorted(x.name for x in d.iterdir()))")
    out = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         check=True, cwd=wheel_venv, env=clean_env(), timeout=60).stdout
    where, names = out.splitlines()
    assert "site-packages" in where and str(REPO_ROOT) not in where
    for name in ("polysocket.js", "polysocket.min.js", "demo.html", "polysocket.d.ts"):
        assert name in names


def test_every_command_imports_from_the_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    """Each command's --help loads its settings (and their modules): a subpackage the wheel forgot
    fails here (relay_node.control.aws once did)."""
    for command in ("router", "relay", "dev", "token", "echo"):
        out = subprocess.run([str(wheel_venv / "bin" / "polysocket"), command, "--help"], capture_output=True,
                             text=True, cwd=tmp_path, env=clean_env(), timeout=60)
        assert out.returncode == 0, (command, out.stderr)


def test_polysocket_dev_runs_from_the_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    base = free_port_block(4)
    proc = subprocess.Popen([str(wheel_venv / "bin" / "polysocket"), "dev", "--port", str(base)], cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output = Output(proc)
    try:
        out = output.wait_for("curl '", timeout=120)
        connect_url = re.search(r"curl '([^']+)'", out)
        assert connect_url is not None
        ok = json.loads(curl(connect_url.group(1)))
        assert ok["ok"] is True, ok
        demo = re.search(r"demo\s+(\S+)", out)
        assert demo is not None
        assert "PolySocket" in curl(demo.group(1))
        assert "PolySocket" in curl(f"http://localhost:{base}/client/polysocket.js")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, output.finish()


def test_a_role_without_its_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A base install (no extra) lacks websockets: `polysocket relay` names the extra to install."""
    import importlib.util

    from polysocket_cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "websockets" else real(name, *a))
    assert main(["relay"], env={}) == 2
    assert "needs websockets; install it with: pip install 'polysocket[relay]'" in capsys.readouterr().err
