"""Per-process CPU time and memory from /proc (Linux only)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14 and 15 of stat(5)


def memory_kib(pid: int) -> dict[str, int]:
    """``rss`` (VmRSS) and ``peak`` (VmHWM), in KiB."""
    out = {"rss": 0, "peak": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                out["peak"] = int(line.split()[1])
    return out


def loadavg() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every number."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def node_versions() -> dict[str, str]:
    """Node.js and the peers installed in bench/node (absent: not installed)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                     timeout=10).stdout.strip().lstrip("v") or "-"
    modules = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node", "node_modules")
    for dist in ("engine.io", "sockjs"):
        with contextlib.suppress(OSError, ValueError), open(os.path.join(modules, dist, "package.json")) as f:
            out[dist] = str(json.load(f)["version"])
    return out


def machine_info() -> dict[str, object]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        pass
    versions = {}
    for dist in ("websockets", "uvicorn", "uvloop", "httptools", "orjson", "python-socketio",
                 "python-engineio", "fastapi", "redis", "prometheus-client"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "-"
    versions.update(node_versions())
    commit = ""
    with contextlib.suppress(OSError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": versions,
        "commit": commit,
        "relay_build": relay_build(),
    }


def relay_build() -> str:
    """Which build of the relay's hot modules the bench's processes import (they import what this
    process does: run from a tree that ``scripts/compile_relay.py tree`` built, they run compiled)."""
    from relay_node.compiled import build_summary

    return build_summary()
