"""Shared pieces of the fault campaign: the profile (short in CI, long on demand), process
inspection (RSS from /proc), and a private stack per test module or test.

Profiles: ``PSTEST_FAULTS=full`` runs the long campaign (10,000 messages each way, more sockets
and rounds); the default, ``ci``, is sized to finish in a few minutes on two shared cores. Every
test sends traffic to loopback only, bounds its own counts and time, and stops every process it
started (by its own handle, never by name).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from polysocket_cli.processes import Proc, Stack


@dataclass(frozen=True)
class Profile:
    name: str
    messages_each_way: int  # through the fault-injecting proxy
    memory_sockets: int  # back-pressured sockets per round in the relay memory test
    memory_rounds: int
    drain_sockets: int  # live sockets during a SIGTERM drain
    fuzz_examples: int  # hypothesis examples per property
    http_fuzz_requests: int  # hostile requests per HTTP fuzz test
    explore: bool  # new random seeds every run (full); the CI profile repeats the same faults and inputs


CI = Profile("ci", messages_each_way=1_000, memory_sockets=10, memory_rounds=3, drain_sockets=200,
             fuzz_examples=200, http_fuzz_requests=1_500, explore=False)
FULL = Profile("full", messages_each_way=10_000, memory_sockets=20, memory_rounds=5, drain_sockets=200,
               fuzz_examples=2_000, http_fuzz_requests=20_000, explore=True)
CI_SEED = 20_261_202


def seed_for(env: str) -> int:
    """The seed of a randomised test: ``env`` if set, else fixed in CI (a red CI run is a change's
    fault, not a new draw) and fresh in the full profile. Printed, so any run can be repeated."""
    raw = os.environ.get(env)
    seed = int(raw) if raw else (random.randrange(2**32) if current_profile().explore else CI_SEED)
    print(f"seed {seed} ({env}={seed} repeats this run)")
    return seed


def current_profile() -> Profile:
    name = os.environ.get("PSTEST_FAULTS", "ci").strip().lower()
    if name not in ("ci", "full"):
        raise pytest.UsageError(f"PSTEST_FAULTS must be 'ci' or 'full', not {name!r}")
    return FULL if name == "full" else CI


@pytest.fixture(scope="session")
def profile() -> Profile:
    return current_profile()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


MiB = 1024 * 1024


async def wait_until(cond: Callable[[], Awaitable[bool]], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(step)


def log_text(stack: Stack, name: str) -> str:
    path = stack.log_dir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def own_stack() -> Iterator[Stack]:
    """A private Valkey (and whatever the test starts on it); every process is ended by its handle,
    a SIGSTOPped one continued first."""
    s = Stack()
    s.start_valkey()
    try:
        yield s
    finally:
        for proc in s.procs:
            proc.signal(signal.SIGCONT)
        s.stop()


def alive(proc: Proc) -> bool:
    return proc.popen.poll() is None


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=400)) as client:
        yield client


def pytest_configure(config: pytest.Config) -> None:
    # Also to be declared in pyproject.toml's [tool.pytest.ini_options] markers (--strict-markers).
    config.addinivalue_line("markers", "faults: the fault campaign (tests/faults, tests/fuzz); "
                            "PSTEST_FAULTS=full for the long profile")
