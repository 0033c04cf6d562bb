"""serverless.yml's ``prod`` stage, rendered as ``npx serverless deploy --stage prod`` renders it, without AWS.

The prod stage reads its Redis URL (a SecureString), the Lambda's subnets and its security group
(StringLists) from the SSM parameters infra/ writes; nothing else renders that path before a real
deploy. Here the parameters are put into LocalStack's SSM with the names and types infra/ssm.tf gives
them, and ``serverless package --stage prod`` (Serverless 3 from the repository's node_modules) resolves
them from there: its AWS SDK (v2, which reads no ``AWS_ENDPOINT_URL``) is pointed at LocalStack by a
``--require`` preload, so no request can leave loopback. The template is then checked (VPC config,
environment, role) and linted with cfn-lint.

The artifact is a placeholder zip: ``package`` references the artifact without looking inside, and
the real zip's contents are tested in tests/stack/test_deploy_artifacts.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from .conftest import _harness

pytestmark = pytest.mark.cloud

ROOT = Path(__file__).resolve().parents[2]
STAGE = "prod"
REDIS_URL = "rediss://:0123456789abcdef0123456789abcdef@master.polysocket-prod-control.abc123.use1.cache.amazonaws.com:6379/0"
SUBNETS = ["subnet-0a1b2c3d4e5f60718", "subnet-0f1e2d3c4b5a69788"]
SECURITY_GROUP = "sg-0123456789abcdef0"

PRELOAD = """
// NODE_OPTIONS=--require: Serverless's AWS SDK v2 talks to LocalStack, and to nothing else.
const AWS = require(process.env.PSTEST_AWS_SDK);
AWS.config.update({ endpoint: process.env.PSTEST_AWS_ENDPOINT, s3ForcePathStyle: true });
"""


def ssm_parameters_of_infra() -> dict[str, str]:
    """infra/ssm.tf's parameters, {name under /polysocket/{stage}/: type}, read from the HCL."""
    text = (ROOT / "infra" / "ssm.tf").read_text()
    found = {}
    for block in re.split(r'^resource "aws_ssm_parameter" ', text, flags=re.M)[1:]:
        name = re.search(r'^\s*name\s*=\s*"\$\{local\.ssm_prefix\}/([a-z0-9-]+)"', block, re.M)
        kind = re.search(r'^\s*type\s*=\s*"(\w+)"', block, re.M)
        assert name and kind, block[:300]
        found[name.group(1)] = kind.group(1)
    return found


def test_serverless_yml_reads_what_infra_writes() -> None:
    """Every SSM path serverless.yml reads is one infra/ssm.tf writes, with the type serverless needs."""
    text = (ROOT / "serverless.yml").read_text()
    read = set(re.findall(r"ssm:/polysocket/\$\{sls:stage\}/([a-z0-9-]+)", text))
    written = ssm_parameters_of_infra()
    assert read == {"redis-url", "lambda-subnet-ids", "lambda-security-group-ids"}
    assert {name: written[name] for name in read} == {
        "redis-url": "SecureString", "lambda-subnet-ids": "StringList", "lambda-security-group-ids": "StringList"}


@pytest.fixture(scope="module")
def ssm_endpoint() -> Iterator[str]:
    harness = _harness()
    try:
        ls = harness.LocalStack(services="ssm")
    except harness.LocalStackMissing as e:
        pytest.fail(str(e), pytrace=False)  # a failure, not a skip: CI must install it
    ls.start()
    try:
        yield ls.endpoint
    finally:
        ls.stop()


@pytest.fixture(scope="module")
def prod_template(ssm_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sls = ROOT / "node_modules" / ".bin" / "serverless"
    if not sls.exists():
        pytest.fail("serverless is not installed: run `npm ci --ignore-scripts --no-audit --no-fund` at the "
                    "repository root", pytrace=False)
    ssm = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test",
                                region_name="us-east-1").client("ssm", endpoint_url=ssm_endpoint)
    values = {"redis-url": REDIS_URL, "lambda-subnet-ids": ",".join(SUBNETS),
              "lambda-security-group-ids": SECURITY_GROUP}
    for name, kind in ssm_parameters_of_infra().items():
        if name in values:  # as Terraform writes them (infra/ssm.tf)
            ssm.put_parameter(Name=f"/polysocket/{STAGE}/{name}", Value=values[name], Type=kind, Overwrite=True)

    service = tmp_path_factory.mktemp("service-prod")
    for name in ("serverless.yml", "package.json"):
        shutil.copy2(ROOT / name, service / name)
    (service / "node_modules").symlink_to(ROOT / "node_modules")
    (service / "build").mkdir()
    with zipfile.ZipFile(service / "build" / "router-lambda.zip", "w") as zf:
        zf.writestr("router_fn/__init__.py", "")  # a placeholder: see the module doc
    preload = service / "localstack-endpoint.js"
    preload.write_text(PRELOAD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLS_", "SERVERLESS_", "NODE_"))}
    env.update({"HOME": str(service), "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off",
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
                "NODE_OPTIONS": f"--require {preload}", "PSTEST_AWS_SDK": str(ROOT / "node_modules" / "aws-sdk"),
                "PSTEST_AWS_ENDPOINT": ssm_endpoint, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    out = service / "out"
    done = subprocess.run([str(sls), "package", "--stage", STAGE, "--region", "us-east-1", "--package", str(out)],
                          cwd=service, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    template = json.loads((out / "cloudformation-template-update-stack.json").read_text())
    template["__path__"] = str(out / "cloudformation-template-update-stack.json")
    return template


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def test_prod_function_joins_the_vpc_infra_made(prod_template: dict[str, Any]) -> None:
    [fn] = resources_of(prod_template, "AWS::Lambda::Function").values()
    assert fn["Properties"]["VpcConfig"] == {"SecurityGroupIds": [SECURITY_GROUP], "SubnetIds": SUBNETS}
    assert fn["Properties"]["FunctionName"] == f"polysocket-router-{STAGE}-router"


def test_prod_environment_is_the_routers_settings(prod_template: dict[str, Any]) -> None:
    from router_fn.settings import RouterSettings

    [fn] = resources_of(prod_template, "AWS::Lambda::Function").values()
    variables = fn["Properties"]["Environment"]["Variables"]
    doc = yaml.safe_load((ROOT / "serverless.yml").read_text())
    assert set(variables) == set(doc["provider"]["environment"])
    assert variables == {
        "POLYSOCKET_REDIS_URL": REDIS_URL,  # the SecureString, decrypted at deploy
        "POLYSOCKET_ACK_TIMEOUT": "2", "POLYSOCKET_ESTABLISH_TIMEOUT": "15", "POLYSOCKET_REQUEST_TIMEOUT": "29",
        "POLYSOCKET_ADMISSION": "tokens",
        "POLYSOCKET_ALLOW_TARGET_CIDRS": "",  # never the local stage's loopback
        "POLYSOCKET_RATE_PER_IP": "120/60", "POLYSOCKET_RATE_PER_TOKEN": "6000/60",
    }
    settings = RouterSettings.from_env(variables)  # the router starts with it (its own checks pass)
    assert settings.redis_url == REDIS_URL


def test_prod_role_may_write_its_logs_and_join_the_vpc_only(prod_template: dict[str, Any]) -> None:
    [fn] = resources_of(prod_template, "AWS::Lambda::Function").values()
    role_ref = fn["Properties"]["Role"]["Fn::GetAtt"]
    assert role_ref[1] == "Arn"
    role = prod_template["Resources"][role_ref[0]]
    assert role["Type"] == "AWS::IAM::Role"
    [assume] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert assume["Principal"] == {"Service": ["lambda.amazonaws.com"]} and assume["Action"] == ["sts:AssumeRole"]
    # the ENIs in the private subnets: AWS's managed policy for exactly that
    [managed] = role["Properties"]["ManagedPolicyArns"]
    assert json.dumps(managed).endswith(':iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"]]}')
    actions = {a for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
               for a in s["Action"]}
    assert actions == {"logs:CreateLogStream", "logs:CreateLogGroup", "logs:TagResource", "logs:PutLogEvents"}


def test_prod_template_passes_cfn_lint(prod_template: dict[str, Any]) -> None:
    base = Path(os.environ.get("PSTEST_TOOLS_DIR") or ROOT / "localstack" / ".tools")
    lint = base / "cfn-lint" / "bin" / "cfn-lint"
    if not lint.exists():
        pytest.fail(f"cfn-lint is not installed: run `localstack/install-tools.sh cfn-lint`; {lint} does not exist",
                    pytrace=False)
    # W3005 (a DependsOn that a Ref already implies) is in Serverless Framework's own generated routes.
    done = subprocess.run([str(lint), "--ignore-checks", "W3005", "--", prod_template["__path__"]],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
