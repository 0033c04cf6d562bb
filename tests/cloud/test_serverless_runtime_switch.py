"""serverless.yml's ``lambdaRuntime`` switch, rendered as ``serverless package`` renders it, and linted.

``py311`` (the default) deploys build/router-lambda.zip on Python 3.11 without SnapStart;
``py312-snapstart`` deploys build/router-lambda-py312.zip (``scripts/build_lambda.py --python 3.12``)
on Python 3.12 with SnapStart, which only a published version restores: the HTTP API must invoke
the ``snapstart`` alias, not ``$LATEST``. Serverless 3 does not validate python3.12, so the runtime
is set by a CloudFormation extension; this test is what proves the pieces land together.

The ``local`` stage is rendered (it reads nothing from SSM, so no AWS and no LocalStack are needed;
the prod stage's SSM path is tests/cloud/test_serverless_prod.py's). The artifacts are placeholder
zips: ``package`` references them without looking inside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cloud

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = {"py311": "router-lambda.zip", "py312-snapstart": "router-lambda-py312.zip"}


def render(tmp: Path, runtime: str | None) -> dict[str, Any]:
    sls = ROOT / "node_modules" / ".bin" / "serverless"
    if not sls.exists():
        pytest.fail("serverless is not installed: run `npm ci --ignore-scripts --no-audit --no-fund` at the "
                    "repository root", pytrace=False)
    for name in ("serverless.yml", "package.json"):
        shutil.copy2(ROOT / name, tmp / name)
    (tmp / "node_modules").symlink_to(ROOT / "node_modules")
    (tmp / "build").mkdir()
    for artifact in ARTIFACTS.values():
        with zipfile.ZipFile(tmp / "build" / artifact, "w") as zf:
            zf.writestr("router_fn/__init__.py", "")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLS_", "SERVERLESS_", "NODE_"))}
    env.update({"HOME": str(tmp), "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off",
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"})
    out = tmp / "out"
    args = [str(sls), "package", "--stage", "local", "--region", "us-east-1", "--package", str(out)]
    if runtime is not None:
        args.append(f"--param=lambdaRuntime={runtime}")
    done = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    template: dict[str, Any] = json.loads((out / "cloudformation-template-update-stack.json").read_text())
    template["__path__"] = str(out / "cloudformation-template-update-stack.json")
    return template


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def lint(template: dict[str, Any]) -> None:
    base = Path(os.environ.get("PSTEST_TOOLS_DIR") or ROOT / "localstack" / ".tools")
    cfn_lint = base / "cfn-lint" / "bin" / "cfn-lint"
    if not cfn_lint.exists():
        pytest.fail(f"cfn-lint is not installed: run `localstack/install-tools.sh cfn-lint`; {cfn_lint} does "
                    "not exist", pytrace=False)
    # W3005 (a DependsOn that a Ref already implies) is in Serverless Framework's own generated routes.
    done = subprocess.run([str(cfn_lint), "--ignore-checks", "W3005", "--", template["__path__"]],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def test_python_312_with_snapstart_invokes_the_snapshotted_alias(tmp_path: Path) -> None:
    template = render(tmp_path, "py312-snapstart")
    [fn] = of_type(template, "AWS::Lambda::Function").values()
    props = fn["Properties"]
    assert props["Runtime"] == "python3.12" and props["Architectures"] == ["x86_64"]
    assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert props["Code"]["S3Key"].endswith("/router-lambda-py312.zip")
    [version] = of_type(template, "AWS::Lambda::Version")
    [alias] = of_type(template, "AWS::Lambda::Alias").values()
    assert alias["Properties"]["Name"] == "snapstart"
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version, "Version"]}
    alias_arn = {"Fn::Join": [":", [{"Fn::GetAtt": ["RouterLambdaFunction", "Arn"]}, "snapstart"]]}
    [integration] = of_type(template, "AWS::ApiGatewayV2::Integration").values()
    assert integration["Properties"]["IntegrationUri"] == alias_arn
    [permission] = of_type(template, "AWS::Lambda::Permission").values()
    assert permission["Properties"]["FunctionName"] == alias_arn
    lint(template)


@pytest.mark.parametrize("runtime", [None, "py311"])
def test_the_default_is_python_311_without_snapstart(tmp_path: Path, runtime: str | None) -> None:
    template = render(tmp_path, runtime)
    [fn] = of_type(template, "AWS::Lambda::Function").values()
    props = fn["Properties"]
    assert props["Runtime"] == "python3.11" and "SnapStart" not in props
    assert props["Code"]["S3Key"].endswith("/router-lambda.zip")
    assert not of_type(template, "AWS::Lambda::Alias")
    [integration] = of_type(template, "AWS::ApiGatewayV2::Integration").values()
    assert integration["Properties"]["IntegrationUri"] == {"Fn::GetAtt": ["RouterLambdaFunction", "Arn"]}
    lint(template)


def test_an_unknown_runtime_does_not_render(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"Cannot resolve variable at \"package\.artifact\""):
        render(tmp_path, "py313")
