"""A/B of relay + echo-target CPU per echoed message on the streaming path, for two source trees.

Each tree gets its own stack (Valkey, router, relay and ``polysocket echo``, started with ``PYTHONPATH``
set to that tree); rounds alternate between the trees so drift on a shared machine hits both,
and the medians are printed. The load is ``bench.stream_cpu``'s: N sessions, each M closed-loop round
trips (send 64 bytes with the ack, wait for the echo on the session's open ``/stream``).

    git archive HEAD~1 | tar -x -C /tmp/base
    PYTHONPATH=$PWD .venv/bin/python -m bench.stream_ab --tree A=/tmp/base --tree B=$PWD \\
        --sessions 100 --messages 100 --rounds 5 [--profile DIR]

``--profile DIR``: each tree's relay and echo target run cProfile (a ``sitecustomize`` hook, toggled by
SIGUSR1) during an extra first round, which is not counted: ``DIR/<tree>-<relay|echo>.prof`` and the
top entries by own time in ``DIR/<tree>-<relay|echo>-<sessions>.txt``. (py-spy cannot read other
processes in this container.) cProfile's own cost inflates small functions; use it to find, and
the counted rounds to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import pstats
import signal
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

from polysocket_cli.processes import Proc, Stack

from .procstat import TICKS, cpu_seconds, loadavg
from .stream_cpu import session


class Side:
    """One tree's router, relay and echo target."""

    def __init__(self, name: str, tree: str, capacity: int, profile: Path | None) -> None:
        self.name = name
        self.stack = stack = Stack()  # its own Valkey: the routers must not share relays
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = tree if profile is None else tree + os.pathsep + str(profile / "hook")
        prof = "POLYSOCKET_BENCH_CPROFILE"
        try:
            stack.start_valkey()
            quiet = {"POLYSOCKET_LOG_LEVEL": "warning"}
            if profile is not None:
                quiet[prof] = str(profile / f"{name}-relay.prof")
            self.relay: Proc = stack.start_relay(f"n{name.lower()}", extra=["--capacity", str(capacity)], env=quiet)
            quiet.pop(prof, None)
            self.router = stack.start_router(env={**quiet, "POLYSOCKET_RATE_PER_IP": "0/1",
                                                  "POLYSOCKET_RATE_PER_TOKEN": "0/1"})
            if profile is not None:
                os.environ[prof] = str(profile / f"{name}-echo.prof")
            self.echo = stack.start_echo()
            os.environ.pop(prof, None)
            self.token = stack.create_token(max_sockets=capacity)
        except BaseException:
            stack.stop()
            raise
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved


HOOK = """# written by bench.stream_ab: SIGUSR1 starts cProfile in this process, the next one stops it
# and writes the stats to $POLYSOCKET_BENCH_CPROFILE
import os, signal
if os.environ.get("POLYSOCKET_BENCH_CPROFILE"):
    import cProfile
    _prof = []
    def _toggle(signum, frame):
        if _prof:
            p = _prof.pop()
            p.disable()
            p.dump_stats(os.environ["POLYSOCKET_BENCH_CPROFILE"])
        else:
            _prof.append(cProfile.Profile())
            _prof[0].enable()
    signal.signal(signal.SIGUSR1, _toggle)
"""


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def top(path: Path, n: int = 25) -> str:
    """The functions with the most own time in a cProfile dump."""
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(n)
    return out.getvalue()


async def run(trees: list[tuple[str, str]], n: int, m: int, rounds: int, profile: Path | None) -> None:
    capacity = 2 * n * rounds + 10
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in trees}
    sides: list[Side] = []
    try:
        if profile is not None:
            (profile / "hook").mkdir(parents=True, exist_ok=True)
            (profile / "hook" / "sitecustomize.py").write_text(HOOK)
        for name, tree in trees:
            sides.append(Side(name, tree, capacity, profile))
        async with httpx.AsyncClient(timeout=30) as http:
            for r in range(-1 if profile is not None else 0, rounds):  # -1: profiled, not counted
                for side in sides if r % 2 == 0 else reversed(sides):
                    socks = []
                    for _ in range(n):
                        q = urlencode({"from": "bench", "target": f"ws://127.0.0.1:{side.echo.port}/",
                                       "token": side.token})
                        answer = (await http.get(f"http://127.0.0.1:{side.router.port}/connect?{q}")).json()
                        socks.append((answer["fqdn"], answer["socket"]))
                    if r == -1:
                        side.relay.signal(signal.SIGUSR1)
                        side.echo.signal(signal.SIGUSR1)
                    relay0, echo0 = cpu_seconds(side.relay.popen.pid), cpu_seconds(side.echo.popen.pid)
                    split0 = cpu_split(side.relay.popen.pid)
                    started = time.monotonic()
                    await asyncio.gather(*(session(side.relay.port, fqdn, sid, "stream", m) for fqdn, sid in socks))
                    per_relay = (cpu_seconds(side.relay.popen.pid) - relay0) / (n * m) * 1e6
                    per_echo = (cpu_seconds(side.echo.popen.pid) - echo0) / (n * m) * 1e6
                    split = [(b - a) / (n * m) * 1e6 for a, b in zip(split0, cpu_split(side.relay.popen.pid),
                                                                       strict=True)]
                    if r == -1:
                        side.relay.signal(signal.SIGUSR1)
                        side.echo.signal(signal.SIGUSR1)
                    if r >= 0:
                        results[side.name].append((per_relay, per_echo))
                    print(f"{side.name} round {r}: {n} sessions x {m}: relay {per_relay:.0f} µs/msg "
                          f"(user {split[0]:.0f}, sys {split[1]:.0f}), echo "
                          f"{per_echo:.0f} µs/msg ({time.monotonic() - started:.1f} s, load {loadavg()})",
                          flush=True)
                    for _, sid in socks:  # free the sockets before the next round
                        await http.get(f"http://127.0.0.1:{side.relay.port}/close", params={"socket": sid})
    finally:
        for side in sides:
            side.stack.stop()
    if profile is not None:
        await asyncio.sleep(1.0)  # the stats are written
        for side in sides:
            for proc in ("relay", "echo"):
                path = profile / f"{side.name}-{proc}.prof"
                if path.exists():
                    (profile / f"{side.name}-{proc}-{n}.txt").write_text(top(path, 40))
                    print(f"--- {side.name} {proc}\n{top(path, 25)}")
    for name, values in results.items():
        relays = sorted(v[0] for v in values)
        echoes = sorted(v[1] for v in values)
        both = sorted(v[0] + v[1] for v in values)
        mid = len(values) // 2
        print(f"{name} median of {len(values)}: relay {relays[mid]:.0f}, echo {echoes[mid]:.0f}, "
              f"relay+echo {both[mid]:.0f} µs/msg  (relay+echo all: {', '.join(f'{v:.0f}' for v in both)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", required=True, help="NAME=PATH of a source tree (two or more)")
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--messages", type=int, default=100, help="round trips per session")
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds per tree, alternating")
    ap.add_argument("--profile", type=Path, default=None)
    args = ap.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    asyncio.run(run(trees, args.sessions, args.messages, args.rounds, args.profile))


if __name__ == "__main__":
    main()
