"""Render a results dict as the markdown report in bench/results/."""

from __future__ import annotations

import math
from typing import Any

# Issue 12's targets: every comparison is a ratio between systems measured in the same run.
TARGET_IDLE_KIB = 12.0
TARGET_IDLE_SOCKETS = 2000
TARGET_MANY_IDLE = 9900
PEERS = ("socketio", "engineio", "sockjs-xhr", "sockjs-jsonp")
STREAM, POLL = "polysocket-stream", "polysocket"

LABEL = {"polysocket": "polysocket polling (relay + target)",
         "polysocket-stream": "polysocket streaming (relay + target)",
         "direct": "direct WebSocket (target only)", "socketio": "python-socketio polling",
         "engineio": "engine.io 6.6 (Node) polling", "sockjs-xhr": "sockjs-node 0.3.24 xhr-polling",
         "sockjs-jsonp": "sockjs-node 0.3.24 jsonp-polling",
         "engineio-bridge": "engine.io 6.6 bridge to the target (bridge + target)",
         "sockjs-bridge": "sockjs-node 0.3.24 xhr-polling bridge to the target (bridge + target)"}
SIDE = ("router", "valkey", "router-stream", "valkey-stream")  # reported, not charged
# Issue 20's targets: the relay process alone against engine.io's whole (echoing) server, and
# everything polysocket runs against what a user builds instead: a bridge in front of the same target.
RELAY_VS_ENGINEIO = 0.75
TOTAL_VS_BRIDGE = 0.6
BRIDGES = ("engineio-bridge", "sockjs-bridge")


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
        f"Relay: {m.get('relay_build', 'build not recorded')} (bench/README.md, \"The relay's two builds\").",
        f"Options: sessions {opts.get('sessions')}, {opts.get('warmup')} s warm-up + {opts.get('duration')} s "
        f"measured per phase, {opts.get('repeat', 1)} round(s), {opts.get('idle')} idle sockets; systems "
        + ", ".join(f"`{s}`" for s in opts.get("systems", [])) + ". "
        "Everything on loopback; one process each for "
        "relay, router, Valkey (one set per polysocket system), the `polysocket echo` target (Python "
        "`websockets`, shared) and each peer's server (python-socketio under uvicorn; engine.io and one "
        "sockjs-node per sockjs transport on Node, `bench/node`); the load generator is this process, on uvloop.",
        "",
        "## Echo load (64-byte text, one message outstanding per session)",
        "",
        "Server CPU per message = CPU seconds of the system's server processes during the measured window / "
        "round trips completed (polysocket: relay + echo target; direct: echo target; the peers: their server "
        "process, which echoes itself).",
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
                         if k not in SIDE)
        lines.append(
            f"| {LABEL.get(x['system'], x['system'])} | {x['sessions']} | {f(x['msgs_per_s'], 0)} | "
            f"{f(rtt['p50_ms'], 2)} | "
            f"{f(rtt['p90_ms'], 2)} | {f(rtt['p99_ms'], 2)} | **{f(x['server_cpu_us_per_msg'])}** | "
            f"{' / '.join(f(v, 0) for v in x.get('rounds_server_cpu_us_per_msg', []))} | {parts} | "
            f"{f(x['loadgen_cpu_percent'], 0)} | {peak} | {x['errors']} |")
    if r.get("idle"):
        lines += ["", "## Idle sockets: memory and CPU", "",
                  "K sockets opened and left idle, receiving (polysocket: one poll outstanding, or one stream "
                  "open; the peers: their poll outstanding), every system with a heartbeat every "
                  f"{opts.get('idle_poll_ttl')} ms (polysocket's ttl, the peers' ping / heartbeat interval: "
                  "the peers run with it during this phase and are restarted with their default of 25 s for "
                  "the load phases). KiB per socket = RSS growth of each server process / K, read after the "
                  "settle window; CPU per socket per minute = each server process's CPU during the settle "
                  "window / K / its minutes.", "",
                  "| system | sockets | KiB per socket | CPU µs per socket per minute | sessions with a heartbeat | "
                  "settle s | open time s | errors |",
                  "|---|---:|---|---|---:|---:|---:|---:|"]
        for x in r["idle"]:
            per = ", ".join(f"{k} {f(v)}" for k, v in x["kib_per_socket"].items())
            cpu = x.get("cpu_us_per_socket_minute", {})
            cpu_s = (f"**{f(x['server_cpu_us_per_socket_minute'])}**"
                     + (" (" + ", ".join(f"{k} {f(v)}" for k, v in cpu.items()) + ")" if len(cpu) > 1 else "")
                     ) if cpu else "-"
            hb = x.get("sessions_with_heartbeat")
            lines.append(f"| {LABEL.get(x['system'], x['system'])} | {x['sockets']} | {per} | {cpu_s} | "
                         f"{f(hb) if hb is not None else '-'} | {f(x.get('settle_seconds'))} | "
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

    if r.get("plots"):
        lines += ["", "## Charts", "", *(f"![{p}]({p})" for p in r["plots"])]

    lines += ["", "## Targets of issue 12", "",
              "Ratios between systems of this run (polysocket / peer: below 1 x is better).", "", *targets(r)]
    lines += ["", "## Targets of issue 20", "",
              "The relay process alone (streaming) against engine.io's whole server echoing in its own process, "
              "and polysocket's total (streaming: relay + target + router + Valkey) against the bridges: "
              "engine.io / sockjs-node in front of the same target, a `ws` client per session "
              "(`bench/node/*_bridge.js`; bridge + target).", "", *bridge_targets(r)]
    return "\n".join(lines) + "\n"


def verdict(ok: bool | None) -> str:
    return "**not shown by this run**" if ok is None else ("**met**" if ok else "**not met**")


def targets(r: dict[str, Any]) -> list[str]:
    """Issue 12's targets, each marked met / not met from this run's numbers."""
    out: list[str] = []
    load = {(x["system"], x["sessions"]): x for x in r.get("load", [])}

    def cpu(system: str, n: int) -> float | None:
        x = load.get((system, n))
        return x["server_cpu_us_per_msg"] if x else None

    def below(a_sys: str, b_sys: str, n: int, what: str = "CPU per message") -> str:
        a, b = cpu(a_sys, n), cpu(b_sys, n)
        head = f"- {what} at {n:,} session{'s' if n != 1 else ''}, {a_sys} below {b_sys}: "
        if a is None or b is None:
            missing = " and ".join(s for s, v in ((a_sys, a), (b_sys, b)) if v is None)
            return head + f"{missing} not measured at this session count — " + verdict(None) + "."
        return head + f"{f(a)} vs {f(b)} µs = {a / b:.2f} x — {verdict(a < b)}."

    for n in (1, 100, 1000):
        out.append(below(STREAM, "engineio", n, "Relay + target CPU per message (streaming)"))
    for peer in ("sockjs-xhr", "sockjs-jsonp"):
        out.append(below(POLL, peer, 100, "Relay + target CPU per message (polling alone)"))

    peers = [p for p in PEERS if (p, 1000) in load]
    for system in (POLL, STREAM):
        mine = load.get((system, 1000))
        head = f"- p99 round trip at 1,000 sessions, {system} below every peer's: "
        if mine is None or not peers:
            out.append(head + "not measured at 1,000 sessions — " + verdict(None) + ".")
            continue
        p99 = mine["rtt"]["p99_ms"]
        ratios = ", ".join(f"{p} {f(load[(p, 1000)]['rtt']['p99_ms'], 0)} ms "
                           f"({p99 / load[(p, 1000)]['rtt']['p99_ms']:.2f} x)" for p in peers)
        ok = all(p99 < load[(p, 1000)]["rtt"]["p99_ms"] for p in peers)
        missing = [p for p in PEERS if p not in peers]
        out.append(head + f"{f(p99, 0)} ms vs {ratios} — {verdict(ok)}"
                   + (f" (not in this run: {', '.join(missing)})" if missing else "") + ".")

    idle = {x["system"]: x for x in r.get("idle", [])}
    for system in (POLL, STREAM):
        x = idle.get(system)
        head = f"- Relay RSS per idle socket ≤ {TARGET_IDLE_KIB:.0f} KiB at {TARGET_IDLE_SOCKETS:,} sockets, {system}: "
        if x is None:
            out.append(head + "no idle phase — " + verdict(None) + ".")
            continue
        kib = next(iter(x["kib_per_socket"].values()), float("nan"))  # the relay: first server process
        shown: bool | None = (kib <= TARGET_IDLE_KIB) if x["sockets"] >= TARGET_IDLE_SOCKETS else None
        peer_kib = ", ".join(f"{p} {f(sum(idle[p]['kib_per_socket'].values()))}" for p in PEERS if p in idle)
        out.append(head + f"{f(kib)} KiB at {x['sockets']:,} sockets"
                   + (f" (peers: {peer_kib} KiB)" if peer_kib else "") + f" — {verdict(shown)}.")
    for system in (POLL, STREAM):
        x = idle.get(system)
        if x is None:
            continue
        many: bool | None = (x["errors"] == 0 and x.get("sessions_with_heartbeat") == x["sockets"]) \
            if x["sockets"] >= TARGET_MANY_IDLE else None
        out.append(f"- {TARGET_MANY_IDLE:,} idle sockets on one relay, heartbeats flowing, 0 errors, {system}: "
                   f"{x['sockets']:,} sockets, {x.get('sessions_with_heartbeat')} with a heartbeat, "
                   f"{x['errors']} errors, {f(x.get('server_cpu_us_per_socket_minute'))} µs CPU per socket per "
                   f"minute — {verdict(many)} (open-files limit of this run: "
                   f"{r.get('meta', {}).get('fd_limit', '?')}; the relay needs two descriptors per socket).")
    return out


def bridge_targets(r: dict[str, Any]) -> list[str]:
    """Issue 20's targets, each marked met / not met (or not shown) from this run's numbers."""
    out: list[str] = []
    load = {(x["system"], x["sessions"]): x for x in r.get("load", [])}

    def ratio_line(head: str, mine: float | None, theirs: float | None, limit: float | None) -> str:
        if mine is None or theirs is None:
            return head + "not measured at this session count — " + verdict(None) + "."
        ratio = mine / theirs
        tail = f" (target ≤ {limit:.2f} x) — {verdict(ratio <= limit)}." if limit is not None else " (reported)."
        return head + f"{f(mine)} vs {f(theirs)} µs = {ratio:.2f} x" + tail

    def relay_us(n: int) -> float | None:
        x = load.get((STREAM, n))
        return x["cpu_us_per_msg"].get("relay-stream") if x else None

    def total_us(system: str, n: int) -> float | None:
        x = load.get((system, n))
        return sum(x["cpu_us_per_msg"].values()) if x else None

    for n in (1, 100, 1000):
        peer = load.get(("engineio", n))
        out.append(ratio_line(f"- Relay alone per message at {n:,} session{'s' if n != 1 else ''}, "
                              "relay-stream against engine.io's whole server: ",
                              relay_us(n), peer["server_cpu_us_per_msg"] if peer else None, RELAY_VS_ENGINEIO))
        for bridge in BRIDGES:
            out.append(ratio_line(f"- Total per message at {n:,} session{'s' if n != 1 else ''}, "
                                  f"{STREAM} against the {bridge} (bridge + target): ",
                                  total_us(STREAM, n), total_us(bridge, n),
                                  TOTAL_VS_BRIDGE if bridge == "engineio-bridge" else None))
    return out
