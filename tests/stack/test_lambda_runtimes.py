"""The zips scripts/build_lambda.py builds are the ones serverless.yml's ``lambdaRuntime`` switch
deploys, and ``--python 3.12`` cross-builds for that runtime whatever Python runs the script
(pip's ``--python-version 3.12 --platform manylinux2014_x86_64 --only-binary=:all:``).

The build downloads wheels from the package index, as tests/stack/test_deploy_artifacts.py's does.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[2]


def build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_lambda", ROOT / "scripts" / "build_lambda.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_each_runtime_deploys_the_zip_built_for_its_python() -> None:
    build = build_script()
    runtimes = yaml.safe_load((ROOT / "serverless.yml").read_text())["custom"]["lambdaRuntimes"]
    deployed = {r["runtime"]: r["artifact"] for r in runtimes.values()}
    built = {f"python{v}": str(path.relative_to(ROOT)) for v, path in build.DEFAULT_OUT.items()}
    assert deployed == built
    assert set(build.PYTHONS) == {v.removeprefix("python") for v in deployed}


def test_python_312_package_is_cross_built_for_that_runtime(tmp_path: Path) -> None:
    out = tmp_path / "router-lambda-py312.zip"
    args = [sys.executable, str(ROOT / "scripts" / "build_lambda.py"), "--python", "3.12", "--out", str(out),
            "--json", "--runs", "1"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert report["python_version"] == "3.12"
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    assert any(re.fullmatch(r"pydantic_core/_pydantic_core\.cpython-312-x86_64-linux-gnu\.so", n) for n in names)
    assert not any(".cpython-311" in n for n in names)
    assert "router_fn/handler.py" in names and "mangum/__init__.py" in names
    pycs = [n for n in names if n.endswith(".pyc")]
    if report["compiled"]:  # compiled by a Python 3.12 found here: bytecode for that runtime only
        assert pycs and all(".cpython-312." in n for n in pycs)
        assert report["import_s_median"] is not None
    else:  # no Python 3.12 here: no bytecode of the wrong version, and the report says why
        assert not pycs and "no Python 3.12" in report["import_note"]
