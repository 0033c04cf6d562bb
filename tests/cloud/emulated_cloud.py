"""The fleet as deployed, on loopback: the emulated cloud that ``make cloud`` brings up for a person
and that ``test_fleet_as_deployed.py`` drives. One module, so what a user clicks through is what the
test checked.

What runs (every process started here, on 127.0.0.1, stopped by PID in :meth:`EmulatedCloud.stop`):

- **Redis over TLS with AUTH** (``tests/support/redis_tls.py``: Debian's redis-server, TLS only, an ACL
  user's password), as ElastiCache with transit encryption and an auth token is. Router, relays and
  ``polysocket token`` all use it, verifying its certificate with ``POLYSOCKET_REDIS_CA_FILE``.
- **LocalStack** (SSM, IAM, STS, Logs, CloudWatch, Route 53) and **moto** (ECS, ECR, Auto Scaling, EC2,
  Secrets Manager, KMS), as ``test_terraform_apply.py`` splits them; a Route 53 zone ``polysocket.test``.
- **The DNS bridge** (``route53_dns.py``: a DNS server answering from LocalStack's Route 53) and
  **pebble** (an ACME CA checking DNS-01 through the bridge).
- **terraform apply of infra/ with its defaults** (HTTPS slot mode), given what has no default: the
  zone, ``redis_url`` (ElastiCache has no emulator here: the TLS Redis above), the metrics token,
  ``acme_directory`` = pebble, and through ``relay_environment`` (infra/'s own knob for more relay
  settings) what only the emulators need: pebble's and the Redis CA, and short lease/heartbeat/sweep
  times so a crash is swept in seconds (:data:`FAST_FLEET`).
- **Relays from a relay-only install**: a venv holding only ``polysocket[relay]`` from a wheel built from
  this checkout, its hot modules compiled, by the Dockerfile's own build steps (:func:`relay_venv`),
  running the image's entrypoint (deploy/relay/entrypoint.py) with
  the container environment and secrets of the task definition Terraform registered (read back from
  moto, secrets from LocalStack's SSM). Loopback substitutions, the only settings the test picks
  (:meth:`EmulatedCloud.relay_substitutions`): ``POLYSOCKET_HOST`` 127.0.0.1 and ``POLYSOCKET_PORT`` a
  free port (Fargate gives every task its own address, so all listen on 443; here they share one
  address), ``POLYSOCKET_RELAY_DOMAIN`` with that port (what infra/ writes when the public port is not
  443), ``POLYSOCKET_PUBLIC_IP`` 127.0.0.1 (Fargate: the task's public address, found through its
  network interface), ``ECS_CONTAINER_METADATA_URI_V4`` a stand-in naming the task, and the SDK's
  ``AWS_ENDPOINT_URL*`` and dummy credentials pointing at the emulators.
- **The router**: ``polysocket router`` over HTTPS (a trustme certificate for ``localhost``), the
  FastAPI app that the Lambda handler wraps with Mangum, with the Redis URL and CA from the same SSM
  parameter. Not serverless-offline: it serves plain HTTP only, and a page on HTTPS needs an HTTPS
  router (mixed content); the Lambda package itself is tested by tests/cloud/test_serverless_prod.py.
- An echo target (``polysocket echo``) and a token created with ``polysocket token create``.

Run by hand: ``make cloud`` (``python -m tests.cloud.emulated_cloud``) prints the demo URL and the Chromium
command line, and tears everything down on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import redis
import trustme

from polysocket_cli.processes import REPO_ROOT, Proc, Stack, free_port, wait_port
from polysocket_core.control import Keys
from tests.support.dockerfile import DOCKERFILE, build_stage_script, dockerfile_instructions
from tests.support.imds_standin import MetadataStandIn, metadata_standin
from tests.support.redis_tls import TlsRedis, start_tls_redis

from .conftest import _harness
from .netns_browser import CHROMIUM, CHROMIUM_ARGS, spki_hash
from .pebble import Pebble
from .route53_dns import Route53DNS
from .terraform_emulators import (
    LOCALSTACK_SERVICES,
    MOTO_SERVICES,
    Moto,
    Terraform,
    apply,
    container_environment,
    terraform_env,
    terraform_workdir,
)

ZONE = "polysocket.test"
RELAY_DOMAIN = f"relay.{ZONE}"
STAGE = "cloud"
# Emulator-only relay settings, passed through infra/'s `relay_environment` variable (so they are in the
# task definition as Terraform stored it). Production keeps the defaults: slot lease 30 s, heartbeat
# TTL 5 s, a sweep every 60 s, INSYNC up to 300 s, which sweep a crashed relay's records within 510 s.
FAST_FLEET = {
    "POLYSOCKET_SLOT_LEASE_TTL": "10",  # 3 s lost leases while a loaded machine started a relay
    "POLYSOCKET_HEARTBEAT_TTL": "4",
    "POLYSOCKET_RECORD_SWEEP_INTERVAL": "1",
    "POLYSOCKET_ROUTE53_INSYNC_TIMEOUT": "10",  # LocalStack's changes are INSYNC at once
    "POLYSOCKET_ROUTE53_INSYNC_POLL": "0.2",
    "POLYSOCKET_ACME_TIMEOUT": "60",
    "POLYSOCKET_CLOUDWATCH_INTERVAL": "5",
    "POLYSOCKET_DRAIN_GRACE": "0",
}
RELAY_VENV_ENV = "PSTEST_RELAY_VENV"  # reuse a relay-only venv (make cloud keeps one in localstack/.relay-venv)


def relay_venv(directory: Path) -> Path:
    """The relay image's venv, built by the Dockerfile's own build stage (its RUN lines, with the image's
    paths mapped here: ``/src`` is this checkout, ``/opt/polysocket`` is ``directory``): the wheel, then
    ``polysocket[relay]`` from it, then the hot modules compiled by mypyc (mypy in a directory beside,
    as ``/opt/mypyc`` is); its python. Built once per directory: a venv already there is reused when
    its wheel matches the checkout's sources."""
    python = directory / "bin" / "python"
    wheels = directory.parent / f"{directory.name}-wheel"
    mypyc = directory.parent / f"{directory.name}-mypyc"
    stamp = directory / ".polysocket-wheel"
    fingerprint = source_fingerprint()
    if python.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return python
    for stale in (directory, wheels, mypyc):
        shutil.rmtree(stale, ignore_errors=True)
    script, env, workdir = build_stage_script(
        dockerfile_instructions(DOCKERFILE.read_text()),
        {"/src": REPO_ROOT, "/wheels": wheels, "/opt/polysocket": directory, "/opt/mypyc": mypyc})
    assert workdir == REPO_ROOT, workdir
    done = subprocess.run(["bash", "-c", script], cwd=workdir, env={**os.environ, **env}, timeout=900,
                          capture_output=True, text=True)
    if done.returncode != 0:  # one clear line first: the relay's dependencies and mypy come from PyPI
        raise RuntimeError(f"the Dockerfile's build stage failed building {directory} (PyPI must be reachable, or "
                           f"PIP_INDEX_URL set to a mirror):\n{(done.stdout + done.stderr)[-4000:]}")
    stamp.write_text(fingerprint)
    return python


def source_fingerprint() -> str:
    """The newest modification time of what goes into the venv (the wheel's sources, and the build steps
    that compile them): a changed checkout rebuilds a reused venv (``make cloud``'s)."""
    packages = ("polysocket_core", "polysocket_redis", "relay_node", "polysocket_cli", "router_fn")
    steps = ("pyproject.toml", "Dockerfile", "scripts/compile_relay.py")
    files = [*(REPO_ROOT / s for s in steps), *(p for pkg in packages for p in (REPO_ROOT / pkg).rglob("*.py"))]
    return str(max(p.stat().st_mtime_ns for p in files))


@dataclass
class Relay:
    task_id: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    metadata: MetadataStandIn
    closer: contextlib.ExitStack

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class EmulatedCloud:
    """Everything in the module docstring; :meth:`start` brings it up, :meth:`stop` takes it down."""

    work: Path
    relay_python: Path
    fast: dict[str, str] = field(default_factory=lambda: dict(FAST_FLEET))
    redis: TlsRedis | None = None
    localstack: Any = None
    moto: Moto | None = None
    dns: Route53DNS | None = None
    pebble: Pebble | None = None
    terraform: Terraform | None = None
    zone_id: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    task_environment: dict[str, str] = field(default_factory=dict)
    relays: dict[str, Relay] = field(default_factory=dict)
    stack: Stack | None = None
    router: Proc | None = None
    echo: Proc | None = None
    router_cert_pem: str = ""
    token: str = ""

    # --- up ---------------------------------------------------------------------------------------------

    def start(self) -> EmulatedCloud:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.redis = start_tls_redis()
        self.localstack = _harness().LocalStack(services=LOCALSTACK_SERVICES)
        self.localstack.start()
        self.moto = Moto().start(self.work / "moto.log")
        route53 = self.aws("route53")
        self.zone_id = route53.create_hosted_zone(Name=ZONE, CallerReference=f"cloud-{time.time()}")[
            "HostedZone"]["Id"].rsplit("/", 1)[-1]
        self.dns = Route53DNS(route53, int(_harness().free_port())).start()
        self.pebble = Pebble(self.dns.address).start()
        self.apply()
        self.start_router()

    def aws(self, service: str) -> Any:
        """A boto3 client of the emulator that answers ``service`` (test_terraform_apply.py's split)."""
        assert self.moto is not None and self.localstack is not None
        moto = service.replace("-", "") in MOTO_SERVICES
        return boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test",
                                     region_name="us-east-1").client(
            service, endpoint_url=self.moto.endpoint if moto else self.localstack.endpoint)

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url()

    @property
    def redis_ca(self) -> str:
        assert self.redis is not None
        return str(self.redis.ca_file)

    def tfvars(self) -> dict[str, Any]:
        """infra/'s variables: only those without a default, and the emulators' (module docstring)."""
        assert self.pebble is not None
        return {
            "stage": STAGE, "route53_zone_id": self.zone_id, "relay_domain": RELAY_DOMAIN,
            "availability_zones": ["us-east-1a", "us-east-1b"],
            "redis_url": self.redis_url, "relay_metrics_token": f"cloud-metrics-{uuid.uuid4().hex}",
            "acme_directory": self.pebble.directory_url,
            "relay_environment": {**self.fast, "POLYSOCKET_REDIS_CA_FILE": self.redis_ca,
                                  "POLYSOCKET_ACME_CA_BUNDLE": self.pebble.ca_bundle},
        }

    def apply(self) -> None:
        assert self.localstack is not None and self.moto is not None
        self.terraform = Terraform(terraform_workdir(self.work, self.localstack.endpoint, self.moto.endpoint),
                                   terraform_env(self.work))
        (self.work / "cloud.tfvars.json").write_text(json.dumps(self.tfvars()))
        self.terraform("init", "-backend=false", "-input=false", "-no-color", timeout=180)
        secrets, ssm = self.aws("secretsmanager"), self.aws("ssm")
        apply(self.terraform, *self.var_file(), forget={
            "secret": lambda name: secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True),
            "parameter": lambda name: ssm.delete_parameter(Name=name)})
        self.outputs = {k: v["value"] for k, v in json.loads(self.terraform("output", "-json").stdout).items()}
        ecs = self.aws("ecs")
        [service] = ecs.describe_services(cluster=self.outputs["relay_cluster_name"],
                                          services=[self.outputs["relay_service_name"]])["services"]
        task_def = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        self.task_environment = container_environment(task_def, self.aws("ssm"))

    def var_file(self) -> list[str]:
        return [f"-var-file={self.work / 'cloud.tfvars.json'}"]

    def relay_substitutions(self, task_id: str, port: int, metadata_url: str) -> dict[str, str]:
        """What differs from Fargate on one loopback address (the module docstring says why, each)."""
        assert self.localstack is not None and self.moto is not None
        endpoints = {"AWS_ENDPOINT_URL": self.localstack.endpoint}
        endpoints.update({f"AWS_ENDPOINT_URL_{s}": self.moto.endpoint for s in ("SECRETS_MANAGER", "KMS", "EC2")})
        return {
            "POLYSOCKET_HOST": "127.0.0.1", "POLYSOCKET_PORT": str(port),
            "POLYSOCKET_RELAY_DOMAIN": f"{self.task_environment['POLYSOCKET_RELAY_DOMAIN']}:{port}",
            "POLYSOCKET_PUBLIC_IP": "127.0.0.1", "ECS_CONTAINER_METADATA_URI_V4": f"{metadata_url}/ecs",
            **endpoints, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true", "PYTHONUNBUFFERED": "1",
        }

    def start_relay(self) -> Relay:
        """One relay as ECS starts a task: the image's entrypoint, the task definition's environment."""
        task_id = uuid.uuid4().hex
        closer = contextlib.ExitStack()
        cluster = self.outputs["relay_cluster_name"]
        metadata = closer.enter_context(metadata_standin({}, {
            "TaskARN": f"arn:aws:ecs:us-east-1:123456789012:task/{cluster}/{task_id}",
            "Containers": [{"Networks": [{"IPv4Addresses": ["10.42.0.10"]}]}]}))
        port = free_port()
        # nothing from this process's environment but PATH and the locale: the container has only its own
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
        env.update(self.task_environment)
        env.update(self.relay_substitutions(task_id, port, metadata.url))
        log = self.work / f"relay-{task_id[:8]}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(self.relay_python), str(REPO_ROOT / "deploy" / "relay" / "entrypoint.py")],
                                    env=env, cwd=self.work, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        relay = Relay(task_id, port, proc, log, metadata, closer)
        self.relays[task_id] = relay
        return relay

    def wait_registered(self, relay: Relay, timeout_s: float = 120) -> str:
        """The relay's name once it registered (slot leased, certificate, records) and listens."""
        r = redis.Redis.from_url(self.redis_url, ssl_ca_certs=self.redis_ca)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                assert relay.proc.poll() is None, relay.log_tail()
                fqdn = r.hget(Keys().node(relay.task_id), "fqdn")
                if fqdn:
                    with contextlib.suppress(ConnectionRefusedError):
                        wait_port(relay.port, timeout=5, proc=relay.proc)
                        return fqdn.decode() if isinstance(fqdn, bytes) else str(fqdn)
                time.sleep(0.2)
        finally:
            r.close()
        raise TimeoutError(f"relay {relay.task_id} not registered after {timeout_s} s:\n{relay.log_tail()}")

    def start_router(self) -> None:
        """``polysocket router`` over HTTPS with the Redis URL from SSM, an echo target, a token."""
        ssm = self.aws("ssm")
        redis_url = ssm.get_parameter(Name=self.outputs["ssm_parameters"]["redis_url"], WithDecryption=True)[
            "Parameter"]["Value"]
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(self.work / "router.pem"))
        cert.private_key_pem.write_to_path(str(self.work / "router.key"))
        self.router_cert_pem = cert.cert_chain_pems[0].bytes().decode()
        log_dir = self.work / "stack"
        log_dir.mkdir(exist_ok=True)
        self.stack = Stack(log_dir=log_dir, redis_url=redis_url)
        tls = {"POLYSOCKET_REDIS_CA_FILE": self.redis_ca, "PYTHONPATH": str(REPO_ROOT)}
        self.router = self.stack.start_router(env={**tls, "POLYSOCKET_SSL_CERTFILE": str(self.work / "router.pem"),
                                                   "POLYSOCKET_SSL_KEYFILE": str(self.work / "router.key")})
        self.echo = self.stack.start_echo()
        self.token = self.stack.create_token(extra=["--redis-ca-file", self.redis_ca])

    # --- what a browser needs ---------------------------------------------------------------------------

    @property
    def router_url(self) -> str:
        assert self.router is not None
        return f"https://localhost:{self.router.port}"

    @property
    def echo_url(self) -> str:
        assert self.echo is not None
        return f"ws://127.0.0.1:{self.echo.port}/"

    def spki_pins(self) -> list[str]:
        """Pebble's root and intermediate (they sign every relay certificate) and the router's certificate."""
        assert self.pebble is not None
        return [spki_hash(p) for p in (self.pebble.root_pem(), self.pebble.intermediate_pem(), self.router_cert_pem)]

    def chromium_args(self) -> list[str]:
        return [*CHROMIUM_ARGS, "--ignore-certificate-errors-spki-list=" + ",".join(self.spki_pins())]

    def demo_url(self) -> str:
        """The client's demo page on the router's origin (it uses that origin as its router)."""
        return f"{self.router_url}/client/demo.html?token={self.token}&target={quote(self.echo_url, safe='')}"

    def chromium_command(self) -> list[str]:
        """Chromium trusting pebble's CA and the router's certificate by SPKI pin, resolving the relay
        names as the bridge answers them (127.0.0.1: what the relays put in Route 53)."""
        return [CHROMIUM, *[a for a in self.chromium_args() if a != "--no-first-run"], "--no-first-run",
                f"--user-data-dir={self.work / 'chromium-profile'}",
                f"--host-resolver-rules=MAP *.{RELAY_DOMAIN} 127.0.0.1", self.demo_url()]

    # --- down -------------------------------------------------------------------------------------------

    def kill_relay(self, relay: Relay) -> None:
        relay.proc.kill()
        relay.proc.wait(10)

    def stop(self) -> None:
        """Everything, newest first, each by its PID."""
        for relay in self.relays.values():
            if relay.proc.poll() is None:
                relay.proc.send_signal(signal.SIGTERM)
        for relay in self.relays.values():
            try:
                relay.proc.wait(15)
            except subprocess.TimeoutExpired:
                relay.proc.kill()
                relay.proc.wait(5)
            relay.closer.close()
        if self.stack is not None:
            self.stack.stop()
        # No terraform destroy: both emulators keep their state in memory only, so stopping them is the
        # teardown (a destroy would add about a minute; test_terraform_apply.py checks destroy itself).
        for stop in (self.pebble, self.dns, self.moto, self.localstack, self.redis):
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop.stop()


@contextlib.contextmanager
def emulated_cloud(work: Path, relay_python: Path) -> Iterator[EmulatedCloud]:
    cloud = EmulatedCloud(work, relay_python).start()
    try:
        yield cloud
    finally:
        cloud.stop()


def main() -> int:
    """``make cloud``: up, two relays, the URL and the command; Ctrl-C (SIGINT or SIGTERM) takes it down."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    venv = Path(os.environ.get(RELAY_VENV_ENV) or REPO_ROOT / "localstack" / ".relay-venv")
    work = Path(tempfile.mkdtemp(prefix="polysocket-cloud-"))
    print(f"make cloud: building the relay-only venv ({venv}), then LocalStack, moto, pebble, the DNS bridge, "
          f"a TLS Redis and terraform apply of infra/ (logs in {work}) ...", flush=True)
    try:
        python = relay_venv(venv)
        with emulated_cloud(work, python) as cloud:
            relays = [cloud.start_relay(), cloud.start_relay()]
            names = [cloud.wait_registered(r) for r in relays]
            print(f"\nrelays (task definition {cloud.outputs['relay_service_name']}): {', '.join(names)}")
            print(f"router: {cloud.router_url}   echo target: {cloud.echo_url}   token: {cloud.token}")
            print(f"DNS bridge (Route 53 zone {ZONE}): {cloud.dns.address if cloud.dns else ''}")
            print(f"\ndemo: {cloud.demo_url()}\nopen it in Chromium:\n  "
                  + " ".join(f"'{a}'" if any(c in a for c in " *&?") else a for a in cloud.chromium_command()))
            print("\nCtrl-C stops everything.", flush=True)
            while all(r.proc.poll() is None for r in relays):
                time.sleep(1)
            print("a relay exited:\n" + "\n".join(r.log_tail() for r in relays if r.proc.poll() is not None))
            return 1
    except KeyboardInterrupt:
        print("\nmake cloud: stopped, everything torn down.", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
