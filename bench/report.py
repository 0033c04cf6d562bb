"""Render a results dict as the markdown report in bench/results/."""

from __future__ import annotations

import math
from typing import Any

# Reference numbers quoted in issue 4 (server CPU per echo round trip, µs; not measured by this run).
ISSUE_REFERENCE_US = {"sockjs-node 0.3.24 jsonp-polling": {1: 190, 100: 101, 1000: 114},
                      "engine.io 6.6 (Node) polling": {1: 154, 100: 71, 1000: 97}}
TARGET_IDLE_KIB = 16.0
TARGET_CONNECT_P50_MS = 5.0
TARGET_IMPORT_MS = 300.0

LABEL = {"polysocket": "polysocket (relay + target)",
         "direct": "direct WebSocket (target only)", "socketio": "python-socketio polling"}


def f(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}"


def markdown(r: dict[str, Any]) -> str:
    meta = r.get("meta", {})
    m = meta.get("machine", {})
    opts = meta.get("options", {})
    lines = [
        f"# polysocket benchmark — {opts.get('name', '')}",
        "",
        f"Run {meta.get('started', '')}, {f(meta.get('wall_seconds'), 0)} s wall, commit `{m.get('commit', '')}`. "
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {f(m.get('memory_mib'))} MiB, "
        f"Linux {m.get('kernel', '?')}, Python {m.get('python', '?')}.",
        f"Load average before / after: {meta.get('loadavg_before', '?')} / {meta.get('loadavg_after', '?')} "
        "(anything else running on the machine inflates every number).",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items()) + ".",
        f"Options: sessions {opts.get('sessions')}, {opts.get('warmup')} s warm-up + {opts.get('duration')} s "
        f"measured per phase, {opts.get('repeat', 1)} round(s), {opts.get('idle')} idle sockets. "
        "Everything on loopback; one process each for "
        "relay, router, Valkey, the `polysocket echo` target (Python `websockets`) and the python-socketio "
        "server; the load generator is this process, on uvloop.",
        "",
        "## Echo load (64-byte text, one message outstanding per session)",
        "",
        "Server CPU per message = CPU seconds of the system's server processes during the measured window / "
        "round trips completed (polysocket: relay + echo target; direct: echo target; socketio: its server).",
        "",
        "With `--repeat N` each phase ran N times, interleaved; the row is the round with the median "
        "server CPU per message, and *rounds* lists every round's value.",
        "",
        "| system | sessions | msg/s | RTT p50 ms | p90 ms | p99 ms | server CPU µs/msg | rounds | of which | "
        "load-gen CPU % | peak RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for x in r.get("load", []):
        rtt = x["rtt"]
        parts = ", ".join(f"{k} {f(v)}" for k, v in x["cpu_us_per_msg"].items())
        peak = ", ".join(f"{k} {x['memory_kib'][k]['peak'] / 1024:.0f}" for k in x["memory_kib"]
                         if k in ("relay", "target", "socketio"))
        lines.append(
            f"| {LABEL[x['system']]} | {x['sessions']} | {f(x['msgs_per_s'], 0)} | {f(rtt['p50_ms'], 2)} | "
            f"{f(rtt['p90_ms'], 2)} | {f(rtt['p99_ms'], 2)} | **{f(x['server_cpu_us_per_msg'])}** | "
            f"{' / '.join(f(v, 0) for v in x.get('rounds_server_cpu_us_per_msg', []))} | {parts} | "
            f"{f(x['loadgen_cpu_percent'], 0)} | {peak} | {x['errors']} |")
    lines += ["", "For reference only (issue 4, measured elsewhere, not by this run): "
              + "; ".join(f"{k}: " + ", ".join(f"{n} sessions {v} µs" for n, v in d.items())
                          for k, d in ISSUE_REFERENCE_US.items()) + "."]

    if r.get("idle"):
        lines += ["", "## Memory per idle socket", "",
                  "K sockets opened and left polling (polysocket: one poll outstanding, heartbeat every "
                  f"{opts.get('idle_poll_ttl')} ms); RSS growth of each server process / K.", "",
                  "| system | sockets | KiB per socket | sessions with a heartbeat | open time s | errors |",
                  "|---|---:|---|---:|---:|---:|"]
        for x in r["idle"]:
            per = ", ".join(f"{k} {f(v)}" for k, v in x["kib_per_socket"].items())
            hb = x.get("sessions_with_heartbeat")
            lines.append(f"| {LABEL[x['system']]} | {x['sockets']} | {per} | {f(hb) if hb is not None else '-'} | "
                         f"{f(x['open_seconds'])} | {x['errors']} |")

    router = r.get("router") or {}
    if router:
        lines += ["", "## Router connect latency", "",
                  "`GET /connect` through the router until the relay has the upstream WebSocket open "
                  "(loopback target).", "",
                  "| concurrency | connects | p50 ms | p90 ms | p99 ms | router CPU ms/connect |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for x in router.values():
            lines.append(f"| {x['concurrency']} | {x['n']} | {f(x['p50_ms'], 2)} | {f(x['p90_ms'], 2)} | "
                         f"{f(x['p99_ms'], 2)} | {f(x['router_cpu_ms_per_connect'], 2)} |")
    li = r.get("lambda_import", {})
    if li:
        lines += ["", f"Router Lambda handler import (fresh interpreter, median of 3): "
                      f"{f(li.get('median_ms'))} ms {li.get('error', '')}".rstrip()]

    lines += ["", "## Targets of issue 4", "", *targets(r)]
    return "\n".join(lines) + "\n"


def targets(r: dict[str, Any]) -> list[str]:
    out = []
    load = {(x["system"], x["sessions"]): x for x in r.get("load", [])}
    sio = load.get(("socketio", 100))
    for system in ("polysocket",):
        ps = load.get((system, 100))
        if not ps:
            continue
        a = ps["server_cpu_us_per_msg"]
        if sio:
            b = sio["server_cpu_us_per_msg"]
            out.append(f"- {system}: relay + target CPU per message at 100 sessions below python-socketio's: "
                       f"{f(a)} µs vs {f(b)} µs — **{'met' if a < b else 'not met'}**.")
        for name, ref in ISSUE_REFERENCE_US.items():
            out.append(f"- {system}: ... below {name} (issue's figure {ref[100]} µs): {f(a)} µs — "
                       f"**{'met' if a < ref[100] else 'not met'}** (reference not re-measured here).")
    for x in r.get("idle", []):
        if x["system"] != "polysocket":
            continue
        kib = next(iter(x["kib_per_socket"].values()), float("nan"))
        out.append(f"- {x['system']}: relay RSS per idle socket ≤ {TARGET_IDLE_KIB:.0f} KiB: {f(kib)} KiB at "
                   f"{x['sockets']} sockets — **{'met' if kib <= TARGET_IDLE_KIB else 'not met'}**.")
        ok = x["sockets"] >= 10_000 and x["errors"] == 0 and x.get("sessions_with_heartbeat") == x["sockets"]
        out.append(f"- {x['system']}: 10,000 idle sockets on one relay, heartbeats flowing, no errors: "
                   f"{x['sockets']} sockets, {x.get('sessions_with_heartbeat')} with a heartbeat, {x['errors']} "
                   f"errors — **{'met' if ok else 'not shown by this run'}** (open-files limit of this run: "
                   f"{r.get('meta', {}).get('fd_limit', '?')}; the relay needs two descriptors per socket).")
    router = (r.get("router") or {}).get("concurrency_1")
    if router:
        p50 = router["p50_ms"]
        out.append(f"- Router connect p50 ≤ {TARGET_CONNECT_P50_MS:.0f} ms: {f(p50, 2)} ms (concurrency 1) — "
                   f"**{'met' if p50 <= TARGET_CONNECT_P50_MS else 'not met'}**.")
    li = r.get("lambda_import", {})
    if "median_ms" in li:
        out.append(f"- Handler import ≤ {TARGET_IMPORT_MS:.0f} ms: {f(li['median_ms'])} ms — "
                   f"**{'met' if li['median_ms'] <= TARGET_IMPORT_MS else 'not met'}**.")
    return out
