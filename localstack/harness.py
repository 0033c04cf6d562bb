"""Start and stop LocalStack (installed by ``localstack/install.sh``) as a plain process on loopback.

Used by the session fixture in ``tests/cloud/conftest.py``; by hand::

    python localstack/harness.py            # starts it, prints the AWS_* variables, Ctrl-C stops it

Stdlib only, so it runs from any interpreter. Everything binds to 127.0.0.1: the gateway (with
``GATEWAY_SERVER=hypercorn``, since the default server binds 0.0.0.0 whatever GATEWAY_LISTEN says)
and LocalStack's DNS server (``DNS_ADDRESS``/``DNS_PORT``; ``DNS_SERVER=127.0.0.1`` stops it probing
outside resolvers). No events/analytics, no certificate download, dummy credentials.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_ENV = "PSTEST_LOCALSTACK_VENV"
INSTALL_HINT = ("LocalStack is not installed: run `localstack/install.sh` (about 2 minutes, PyPI only; it creates "
                "localstack/.venv, or the venv named by $PSTEST_LOCALSTACK_VENV)")
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


class LocalStackMissing(RuntimeError):
    pass


def venv_dir() -> Path:
    return Path(os.environ.get(VENV_ENV) or HERE / ".venv")


# Below Linux's ephemeral range (32768+), where any outgoing connection may take a port at any moment;
# the same range as polysocket_cli.processes.free_port (this file is stdlib only: it cannot import it).
FREE_PORT_RANGE = range(20_000, 32_000)
_handed_out: set[int] = set()  # never the same port twice per process (two are drawn before either binds)


def free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (LocalStack's DNS server takes both)."""
    for _ in range(200):
        port = random.choice(FREE_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port")


class LocalStack:
    def __init__(self, *, services: str | None = None, venv: Path | None = None, startup_timeout_s: float = 60.0):
        self.venv = venv or venv_dir()
        self.python = self.venv / "bin" / "python"
        if not self.python.exists():
            raise LocalStackMissing(f"{INSTALL_HINT}; {self.python} does not exist")
        self.services = services
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.dns_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.root = Path(tempfile.mkdtemp(prefix="polysocket-localstack-"))
        self.log_path = self.root / "localstack.log"
        self.startup_s = 0.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """What an SDK client needs to talk to this LocalStack and to nothing else."""
        return {**DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint,
                # no shared config or credentials of the host, and never the instance metadata service
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "LOCALSTACK_", "PIP_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(DUMMY_CREDENTIALS)
        env.update({
            "OVERRIDE_IN_DOCKER": "0",
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}", "GATEWAY_SERVER": "hypercorn",
            "DNS_ADDRESS": "127.0.0.1", "DNS_PORT": str(self.dns_port), "DNS_SERVER": "127.0.0.1",
            "FILESYSTEM_ROOT": str(self.root / "fs"), "DISABLE_EVENTS": "1", "SKIP_SSL_CERT_DOWNLOAD": "1",
            "EAGER_SERVICE_LOADING": "0",
        })
        if self.services:
            env["SERVICES"] = self.services
        return env

    def health(self) -> dict[str, object] | None:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"{self.endpoint}/_localstack/health", timeout=2) as r:
                answer: dict[str, object] = json.loads(r.read())
                return answer
        except (OSError, ValueError):
            return None

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def start(self) -> LocalStack:
        self.port, self.dns_port = free_port(), free_port()
        (self.root / "fs").mkdir(exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(self.python), "-m", "localstack.runtime.main"], env=self.server_env(),
                                         cwd=self.root, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while time.monotonic() - t0 < self.startup_timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"LocalStack exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            if self.health() is not None:
                self.startup_s = time.monotonic() - t0
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"LocalStack not ready after {self.startup_timeout_s:g} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after timeout_s (its state is thrown away anyway; a clean shutdown
        took 6-12 s on a loaded 2-core machine)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # its own session: signal the group it leads (LocalStack may start helpers)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> int:
    try:
        ls = LocalStack(services=os.environ.get("SERVICES")).start()
    except LocalStackMissing as e:
        print(e, file=sys.stderr)
        return 2
    print(f"# LocalStack ready in {ls.startup_s:.1f} s (log: {ls.log_path}); Ctrl-C stops it")
    for k, v in ls.client_env().items():
        print(f"export {k}={v}")
    try:
        while ls.proc is not None and ls.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        ls.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
