"""SVG charts of a bench results dict, hand-written (no plotting dependency).

``python -m bench`` calls ``write_all``: CPU per message and p99 latency against sessions (one
line per system, log axes where the values span decades), memory and CPU per idle socket (one bar
per system). The ``*_svg`` functions are pure: results dict in, SVG text out. Every series is a
``<g class="series" data-system="…">`` so a test (or a script) can find each system's marks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

WIDTH, HEIGHT = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 40, 50  # plot margins; the legend sits in the right one

# One colour per system, stable across charts (colour-blind-safe palette, Okabe-Ito).
COLOURS = {"polysocket": "#0072B2", "polysocket-stream": "#56B4E9", "direct": "#999999",
           "socketio": "#E69F00", "engineio": "#D55E00", "sockjs-xhr": "#009E73", "sockjs-jsonp": "#CC79A7",
           "engineio-bridge": "#882255", "sockjs-bridge": "#117733"}
FALLBACK = ("#000000", "#F0E442", "#8C564B", "#17BECF")

Point = tuple[float, float]


def colour(system: str, i: int) -> str:
    return COLOURS.get(system, FALLBACK[i % len(FALLBACK)])


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or v == int(v):
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2g}"


def linear_ticks(hi: float) -> list[float]:
    """0 .. a round number ≥ hi, in 1/2/5 steps (4 to 10 ticks)."""
    if not hi > 0:
        return [0.0, 1.0]
    raw = hi / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    n = math.ceil(hi / step - 1e-9)
    return [i * step for i in range(n + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi] (at least two)."""
    a = math.floor(math.log10(lo))
    b = max(a + 1, math.ceil(math.log10(hi)))
    return [10.0 ** e for e in range(a, b + 1)]


class Scale:
    def __init__(self, ticks: Sequence[float], log: bool, px0: float, px1: float) -> None:
        self.ticks = list(ticks)
        self.log = log
        self.lo, self.hi = self.ticks[0], self.ticks[-1]
        self.px0, self.px1 = px0, px1

    def __call__(self, v: float) -> float:
        if self.log:
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.px0 + f * (self.px1 - self.px0)


def _frame(title: str, xlabel: str, ylabel: str, note: str = "") -> list[str]:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
           f"<title>{escape(title)}</title>",
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 10}" text-anchor="middle">{escape(xlabel)}</text>',
           f'<text transform="translate(16 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
           f'text-anchor="middle">{escape(ylabel)}</text>']
    if note:
        out.append(f'<text x="{WIDTH - RIGHT + 10}" y="{HEIGHT - 10}" font-size="10" fill="#555">{escape(note)}</text>')
    return out


def _y_axis(y: Scale) -> list[str]:
    out = []
    for t in y.ticks:
        py = y(t)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>')
    out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>')
    return out


def _legend_entry(i: int, system: str, col: str) -> str:
    ly = TOP + 10 + 18 * i
    lx = WIDTH - RIGHT + 14
    return (f'<rect x="{lx}" y="{ly - 9}" width="14" height="10" fill="{col}" stroke="none"/>'
            f'<text x="{lx + 20}" y="{ly}" fill="#222" stroke="none">{escape(system)}</text>')


def line_chart(title: str, xlabel: str, ylabel: str, series: dict[str, list[Point]], *,
               log_x: bool = True, log_y: bool = False, unit: str = "") -> str:
    """One polyline (with point marks) per series; x ticks at the x values present."""
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    xs = sorted({p[0] for p in pts}) or [1.0, 10.0]
    ys = [p[1] for p in pts if (p[1] > 0 or not log_y)] or [1.0]
    log_x = log_x and xs[0] > 0 and len(xs) > 1
    if log_x:
        x = Scale(log_ticks(xs[0], xs[-1]), True, LEFT + 20, WIDTH - RIGHT - 20)
        x.lo, x.hi = xs[0], xs[-1]
    else:
        lo, hi = (xs[0] - 1, xs[0] + 1) if len(xs) == 1 else (xs[0], xs[-1])
        x = Scale([lo, hi], False, LEFT + 20, WIDTH - RIGHT - 20)
    if log_y:
        y = Scale(log_ticks(min(ys), max(ys)), True, HEIGHT - BOTTOM, TOP)
    else:
        y = Scale(linear_ticks(max(ys)), False, HEIGHT - BOTTOM, TOP)
    out = _frame(title, xlabel, ylabel, "log scale" if log_y else "")
    out += _y_axis(y)
    for v in xs:
        out.append(f'<text x="{x(v):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{fmt(v)}</text>')
    for i, (system, points) in enumerate(series.items()):
        col = colour(system, i)
        good = [(a, b) for a, b in sorted(points) if math.isfinite(b) and (b > 0 or not log_y)]
        out.append(f'<g class="series" data-system={quoteattr(system)} stroke="{col}" fill="{col}">')
        if len(good) > 1:
            path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in good)
            out.append(f'<polyline points="{path}" fill="none" stroke-width="2"/>')
        for a, b in good:
            out.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3.5">'
                       f"<title>{escape(system)}: {fmt(a)} → {fmt(b)} {escape(unit)}</title></circle>")
        out.append(_legend_entry(i, system, col))
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bar_chart(title: str, ylabel: str, bars: dict[str, dict[str, float]], *, unit: str = "",
              limit: float | None = None, limit_label: str = "") -> str:
    """One bar per system, stacked from its parts (per process, first at the bottom, lighter above),
    its total written above it; an optional dashed limit line (a target)."""
    totals = {s: sum(parts.values()) for s, parts in bars.items()}
    vals = [v for v in totals.values() if math.isfinite(v)]
    hi = max([*vals, limit or 0.0, 1e-9])
    y = Scale(linear_ticks(hi), False, HEIGHT - BOTTOM, TOP)
    out = _frame(title, "", ylabel)
    out += _y_axis(y)
    n = max(1, len(bars))
    slot = (WIDTH - RIGHT - LEFT) / n
    for i, (system, parts) in enumerate(bars.items()):
        col = colour(system, i)
        bx = LEFT + i * slot + slot * 0.15
        out.append(f'<g class="series" data-system={quoteattr(system)} fill="{col}">')
        total = totals[system]
        if math.isfinite(total):
            base = 0.0
            for j, (part, v) in enumerate(parts.items()):
                lo, hi_ = y(max(0.0, base)), y(max(0.0, base + v))
                base += v
                if hi_ >= lo:
                    continue  # zero or negative: nothing to draw
                out.append(f'<rect x="{bx:.1f}" y="{hi_:.1f}" width="{slot * 0.7:.1f}" height="{lo - hi_:.1f}" '
                           f'fill-opacity="{max(0.35, 1 - 0.3 * j):.2f}"><title>{escape(system)} {escape(part)}: '
                           f"{fmt(v)} {escape(unit)}</title></rect>")
            top = y(max(0.0, total))
            out.append(f'<text x="{bx + slot * 0.35:.1f}" y="{top - 4:.1f}" text-anchor="middle" '
                       f'fill="#222">{fmt(total)}</text>')
        out.append(f'<text x="{bx + slot * 0.35:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                   f'fill="#222" font-size="10">{escape(system)}</text>')
        out.append(_legend_entry(i, system, col))
        out.append("</g>")
    if limit is not None:
        py = y(limit)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#c00" '
                   f'stroke-dasharray="6 4"/>')
        out.append(f'<text x="{WIDTH - RIGHT - 4}" y="{py - 4:.1f}" text-anchor="end" fill="#c00">'
                   f"{escape(limit_label)}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _by_system(load: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> dict[str, list[Point]]:
    series: dict[str, list[Point]] = {}
    for x in load:
        series.setdefault(x["system"], []).append((float(x["sessions"]), float(value(x))))
    return series


def cpu_svg(r: dict[str, Any]) -> str:
    return line_chart("Server CPU per echoed message", "sessions (log scale)", "µs per message",
                      _by_system(r.get("load", []), lambda x: x["server_cpu_us_per_msg"]), unit="µs")


def p99_svg(r: dict[str, Any]) -> str:
    return line_chart("Round-trip latency p99", "sessions (log scale)", "p99 ms",
                      _by_system(r.get("load", []), lambda x: x["rtt"]["p99_ms"]), log_y=True, unit="ms")


def idle_memory_svg(r: dict[str, Any], target_kib: float | None = None) -> str:
    idle = r.get("idle", [])
    k = idle[0]["sockets"] if idle else 0
    bars = {x["system"]: dict(x["kib_per_socket"]) for x in idle}
    return bar_chart(f"Server RSS per idle socket ({k:,} sockets; lighter: the echo target)", "KiB per socket",
                     bars, unit="KiB",
                     limit=target_kib, limit_label=f"target {fmt(target_kib)} KiB" if target_kib else "")


def idle_cpu_svg(r: dict[str, Any]) -> str:
    idle = r.get("idle", [])
    hb = next((x.get("heartbeat_ms") for x in idle if x.get("heartbeat_ms")), None)
    bars = {x["system"]: dict(x.get("cpu_us_per_socket_minute", {})) for x in idle}
    return bar_chart("Server CPU per idle socket per minute" + (f" (heartbeat every {hb / 1000:g} s)" if hb else ""),
                     "µs CPU per socket per minute", bars, unit="µs")


def write_all(r: dict[str, Any], out: Path, name: str, target_kib: float | None = 12.0) -> list[str]:
    """Write the charts next to the results; return their file names."""
    charts = {}
    if r.get("load"):
        charts[f"{name}-cpu.svg"] = cpu_svg(r)
        charts[f"{name}-p99.svg"] = p99_svg(r)
    if r.get("idle"):
        charts[f"{name}-idle-memory.svg"] = idle_memory_svg(r, target_kib)
        charts[f"{name}-idle-cpu.svg"] = idle_cpu_svg(r)
    for file, svg in charts.items():
        (out / file).write_text(svg)
    return list(charts)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.plots RESULTS.json``: (re)draw the charts of a recorded run next to it."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bench.plots", description=main.__doc__)
    ap.add_argument("results", type=Path, help="a results JSON written by python -m bench")
    args = ap.parse_args(argv)
    r = json.loads(args.results.read_text())
    for name in write_all(r, args.results.parent, args.results.stem):
        print(args.results.parent / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
