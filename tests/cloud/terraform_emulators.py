"""infra/ against emulators, shared by ``test_terraform_apply.py``, ``emulated_cloud.py`` (``make cloud``)
and ``test_fleet_as_deployed.py``: which emulator answers which AWS service, moto's server, the
``terraform`` runner with its provider mirror, and the container environment ECS would hand a task.
Moved here from test_terraform_apply.py (test modules do not import one another; tests/README.md).

A missing terraform, provider mirror or moto FAILS with the install hint (``pytest.fail``), never skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from polysocket_cli.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
LOCALSTACK_SERVICES = "ssm,iam,sts,logs,cloudwatch,route53"
# AWS provider endpoint names; ec2 because moto's ECS checks the service's subnets in its own EC2
MOTO_SERVICES = ("ecs", "ecr", "applicationautoscaling", "autoscaling", "ec2", "kms", "secretsmanager")
# kms, secretsmanager: the HTTPS test's certificate store. LocalStack 4.13.1's KMS answers CreateKey with
# 500 under Python 3.11 ("encoding without a string argument"), and the secrets name that key.
TERRAFORM_HINT = ("terraform >= 1.5 and the hashicorp/aws 5.x provider as a filesystem mirror are needed "
                  "(this machine image ships terraform 1.11.4 and /opt/tf-plugins; set TF_PROVIDER_MIRROR to "
                  "the folder that holds registry.terraform.io/)")
MOTO_HINT = "moto's server is not installed: run `localstack/install-tools.sh moto`"


def tools_dir() -> Path:
    return Path(os.environ.get("PSTEST_TOOLS_DIR") or ROOT / "localstack" / ".tools")


class Moto:
    """moto's server on a loopback port (its own venv), state thrown away with the process."""

    def __init__(self) -> None:
        self.python = tools_dir() / "moto" / "bin" / "python"
        if not (tools_dir() / "moto" / "bin" / "moto_server").exists():
            pytest.fail(f"{MOTO_HINT}; {tools_dir() / 'moto'} has no moto_server", pytrace=False)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> Moto:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON", "VIRTUAL_ENV"))}
        env.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"})
        with open(log, "wb") as out:
            # moto's server plus the Application Auto Scaling tag calls it lacks (localstack/moto_server.py)
            self.proc = subprocess.Popen([str(self.python), str(ROOT / "localstack" / "moto_server.py"),
                                          "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-2000:]
            with contextlib.suppress(OSError), urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"{self.endpoint}/moto-api/", timeout=2):
                return self
            time.sleep(0.2)
        raise TimeoutError(f"moto not ready:\n{log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def provider_mirror() -> Path:
    candidates = [os.environ.get("TF_PROVIDER_MIRROR", ""), "/opt/tf-plugins"]
    for c in candidates:
        if c and (Path(c) / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return Path(c)
    pytest.fail(f"no hashicorp/aws provider mirror found (looked in {[c for c in candidates if c]}): {TERRAFORM_HINT}",
                pytrace=False)



class Terraform:
    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.times: dict[str, float] = {}

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        try:
            done = subprocess.run(["terraform", f"-chdir={self.work}", *args], env=self.env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else str(e.stdout or "")
            raise AssertionError(f"terraform {args[0]} took more than {timeout:g} s:\n{out[-4000:]}") from None
        self.times[args[0]] = self.times.get(args[0], 0.0) + time.monotonic() - t0
        if check:
            assert done.returncode == 0, f"terraform {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done


# An emulator that answers a create slowly gets it retried by the provider's SDK, and the retry fails
# with "already exists" although infra/ created the thing once: seen in CI runs for a Secrets Manager
# secret (moto) and an SSM parameter (LocalStack). A fault of the emulators, so the apply forgets what
# was created twice and runs again (the state holds the rest); nothing else is retried.
DUPLICATED_CREATES = {
    "secret": re.compile(r"creating Secrets Manager Secret \(([^)]+)\):[^\n]*ResourceExistsException"),
    "parameter": re.compile(r"creating SSM Parameter \(([^)]+)\):[^\n]*ParameterAlreadyExists"),
}


def apply(tf: Terraform, *args: str, forget: Mapping[str, Callable[[str], None]], timeout: float = 420,
          attempts: int = 3) -> subprocess.CompletedProcess[str]:
    """``terraform apply -auto-approve`` with ``args``, surviving the emulators' duplicated creates
    (``forget[kind](name)`` deletes one, for each kind of ``DUPLICATED_CREATES``)."""
    command = ("apply", "-auto-approve", "-input=false", "-no-color", *args)
    for attempt in range(1, attempts + 1):
        done = tf(*command, timeout=timeout, check=False)
        output = done.stdout + done.stderr
        duplicated = [(kind, name) for kind, pattern in DUPLICATED_CREATES.items() for name in pattern.findall(output)]
        if done.returncode == 0 or not duplicated or attempt == attempts:
            break
        for kind, name in duplicated:
            forget[kind](name)
    return _checked(done, command)


def _checked(done: subprocess.CompletedProcess[str], command: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"terraform {' '.join(command)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def terraform_workdir(tmp: Path, localstack: str, moto: str) -> Path:
    """A copy of infra/ (no tests) plus an override file that points the provider at the emulators."""
    work = tmp / "infra"
    work.mkdir()
    for tf in INFRA.glob("*.tf"):
        shutil.copy2(tf, work / tf.name)
    names = ["ssm", "iam", "sts", "logs", "cloudwatch", "route53", "elasticache", "s3", *MOTO_SERVICES]
    endpoints = "\n".join(f'    {n} = "{moto if n in MOTO_SERVICES else localstack}"' for n in names)
    (work / "zz_emulators_override.tf").write_text(f'''
# written by tests/cloud/test_terraform_apply.py: LocalStack, and moto for the services LocalStack's
# community edition answers with 501
provider "aws" {{
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  s3_use_path_style           = true

  endpoints {{
{endpoints}
  }}
}}
''')
    return work


def terraform_env(tmp: Path) -> dict[str, str]:
    if shutil.which("terraform") is None:
        pytest.fail(f"terraform is not on PATH: {TERRAFORM_HINT}", pytrace=False)
    mirror = provider_mirror()
    cli = tmp / "cli.tfrc"
    cli.write_text(f'''disable_checkpoint = true
provider_installation {{
  filesystem_mirror {{
    path    = "{mirror}"
    include = ["registry.terraform.io/hashicorp/aws"]
  }}
}}
''')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update({"TF_CLI_CONFIG_FILE": str(cli), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1",
                "TF_DATA_DIR": str(tmp / ".terraform"), "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    return env


def container_environment(task_def: dict[str, Any], ssm: Any) -> dict[str, str]:
    """What ECS hands the container: its environment, and its secrets read from SSM by ARN."""
    [container] = task_def["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container.get("environment", [])}
    for secret in container.get("secrets", []):
        name = secret["valueFrom"].split(":parameter", 1)[1]
        env[secret["name"]] = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    return env
