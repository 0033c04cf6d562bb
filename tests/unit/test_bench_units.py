"""The bench's pure pieces: the event-stream parser its streaming client uses, and the SVG charts."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bench import plots, report
from bench.sse import SseParser

SVG = "{http://www.w3.org/2000/svg}"


# SseParser


def test_sse_events_and_comments_split_anywhere() -> None:
    body = (b":" + b" " * 2048 + b"\n\n" + b'id: 3\ndata: {"seq":3,"type":"text","data":"hi"}\n\n'
            b":hb\n\n" + b'id: 4\r\ndata: {"seq":4}\r\n\r\n')
    for cut in range(1, len(body)):  # every split point: a line or an event may straddle two chunks
        p = SseParser()
        e1, c1 = p.feed(body[:cut])
        e2, c2 = p.feed(body[cut:])
        assert e1 + e2 == [(b"3", b'{"seq":3,"type":"text","data":"hi"}'), (b"4", b'{"seq":4}')], cut
        assert c1 + c2 == [b" " * 2048, b"hb"], cut
        assert p.pending == 0
        assert p.last_id == b"4"


def test_sse_multiline_data_unknown_fields_and_id_without_data() -> None:
    p = SseParser()
    events, comments = p.feed(b"event: x\nretry: 10\ndata:a\ndata: b\n\nid: 9\n\nid: bad\0id\n\ndata: c")
    assert events == [(None, b"a\nb")]
    assert comments == []
    assert p.last_id == b"9"  # an id with NUL is ignored; an id alone updates it without an event
    assert p.pending == len(b"data: c")
    assert p.feed(b"\n\n") == ([(b"9", b"c")], [])


# plots


def results() -> dict[str, Any]:
    systems = ["polysocket", "polysocket-stream", "engineio", "sockjs-xhr"]
    load = [{"system": s, "sessions": n, "server_cpu_us_per_msg": 100.0 + i * 10 + n / 10,
             "rtt": {"p99_ms": 0.5 * (i + 1) * n}}
            for n in (1, 100, 1000) for i, s in enumerate(systems)]
    load.append({"system": "direct", "sessions": 1, "server_cpu_us_per_msg": float("nan"), "rtt": {"p99_ms": 0.2}})
    idle = [{"system": "polysocket", "sockets": 2000, "kib_per_socket": {"relay": 11.5, "target": 0.8},
             "cpu_us_per_socket_minute": {"relay": 900.0, "target": 40.0}, "server_cpu_us_per_socket_minute": 940.0,
             "errors": 0, "sessions_with_heartbeat": 2000},
            {"system": "engineio", "sockets": 2000, "kib_per_socket": {"engineio": 23.0},
             "cpu_us_per_socket_minute": {"engineio": 1500.0}, "server_cpu_us_per_socket_minute": 1500.0,
             "errors": 0, "sessions_with_heartbeat": 2000}]
    return {"load": load, "idle": idle}


def series(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    return {g.attrib["data-system"]: g for g in root.iter(SVG + "g") if g.attrib.get("class") == "series"}


def test_line_charts_have_a_series_per_system_with_its_points() -> None:
    r = results()
    # the NaN CPU point of "direct" is left out of the CPU chart, not drawn at a bogus place
    for svg, direct_points in ((plots.cpu_svg(r), 0), (plots.p99_svg(r), 1)):
        got = series(svg)
        assert sorted(got) == sorted({x["system"] for x in r["load"]})
        for system in ("polysocket", "polysocket-stream", "engineio", "sockjs-xhr"):
            assert len(got[system].findall(SVG + "circle")) == 3
            assert len(got[system].findall(SVG + "polyline")) == 1
        assert len(got["direct"].findall(SVG + "circle")) == direct_points


def test_higher_values_are_drawn_higher() -> None:
    got = series(plots.cpu_svg(results()))
    ys = [float(c.attrib["cy"]) for c in got["polysocket"].findall(SVG + "circle")]
    assert ys[0] > ys[1] > ys[2]  # 100.1, 110, 200 µs: SVG y grows downwards
    poly = [float(c.attrib["cy"]) for c in got["polysocket"].findall(SVG + "circle")]
    sockjs = [float(c.attrib["cy"]) for c in got["sockjs-xhr"].findall(SVG + "circle")]
    assert all(a > b for a, b in zip(poly, sockjs, strict=True))


def test_idle_bars_stack_per_process_and_show_the_target() -> None:
    svg = plots.idle_memory_svg(results(), target_kib=12.0)
    got = series(svg)
    assert sorted(got) == ["engineio", "polysocket"]
    assert len(got["polysocket"].findall(SVG + "rect")) == 3  # relay, target, the legend swatch
    assert "12.3" in "".join(got["polysocket"].itertext())  # the total, written above the bar
    assert "target 12 KiB" in svg
    assert sorted(series(plots.idle_cpu_svg(results()))) == ["engineio", "polysocket"]


def test_write_all_writes_parseable_files(tmp_path: Path) -> None:
    names = plots.write_all(results(), tmp_path, "x")
    assert names == ["x-cpu.svg", "x-p99.svg", "x-idle-memory.svg", "x-idle-cpu.svg"]
    for n in names:
        assert series((tmp_path / n).read_text())
    assert plots.write_all({"load": [], "idle": []}, tmp_path, "empty") == []


def test_ticks() -> None:
    assert plots.linear_ticks(353.6) == [0, 100, 200, 300, 400]
    assert plots.log_ticks(0.36, 13.2) == [0.1, 1.0, 10.0, 100.0]
    assert math.isclose(plots.Scale([1, 10, 100], True, 0, 100)(10), 50)


# the targets section


def test_targets_are_ratios_from_the_run() -> None:
    r = results()
    lines = report.targets(r)
    stream = [x for x in lines if "(streaming) at 100 sessions" in x]
    assert stream == ["- Relay + target CPU per message (streaming) at 100 sessions, polysocket-stream below "
                      "engineio: 120.0 vs 130.0 µs = 0.92 x — **met**."]
    assert any("polysocket below sockjs-xhr: 110.0 vs 140.0 µs = 0.79 x — **met**" in x for x in lines)
    assert any("sockjs-jsonp not measured" in x and "not shown" in x for x in lines)
    p99 = next(x for x in lines if "p99" in x and "polysocket-stream" in x)
    assert "1,000 ms vs engineio 1,500 ms (0.67 x), sockjs-xhr 2,000 ms (0.50 x) — **met**" in p99
    assert "not in this run: socketio, sockjs-jsonp" in p99
    idle = next(x for x in lines if "≤ 12 KiB" in x and ", polysocket:" in x)
    assert "11.5 KiB at 2,000 sockets" in idle and "**met**" in idle
    many = next(x for x in lines if "9,900 idle" in x)
    assert "940.0 µs CPU per socket per minute" in many and "not shown by this run" in many

    slower = [x for x in r["load"] if not (x["system"] == "engineio" and x["sessions"] == 1000)]
    slower.append({"system": "engineio", "sessions": 1000, "server_cpu_us_per_msg": 50.0, "rtt": {"p99_ms": 900.0}})
    lines = report.targets({**r, "load": slower})
    assert "**not met**" in next(x for x in lines if "p99" in x and "polysocket-stream" in x)
    assert "**not met**" in next(x for x in lines if "(streaming) at 1,000 sessions" in x)


def test_issue_20_targets_compare_the_relay_alone_and_the_whole_against_the_bridges() -> None:
    def row(system: str, n: int, per: dict[str, float]) -> dict[str, Any]:
        return {"system": system, "sessions": n, "cpu_us_per_msg": per, "server_cpu_us_per_msg": sum(per.values()),
                "rtt": {"p99_ms": 1.0}}

    load = [row("polysocket-stream", 100, {"relay-stream": 70.0, "target": 30.0, "router-stream": 0.0}),
            row("engineio", 100, {"engineio": 100.0}),
            row("engineio-bridge", 100, {"engineio-bridge": 150.0, "target": 30.0}),
            row("polysocket-stream", 1000, {"relay-stream": 80.0, "target": 40.0}),
            row("engineio", 1000, {"engineio": 100.0}),
            row("engineio-bridge", 1000, {"engineio-bridge": 160.0, "target": 40.0}),
            row("sockjs-bridge", 1000, {"sockjs-bridge": 200.0, "target": 40.0})]
    lines = report.bridge_targets({"load": load})
    assert "- Relay alone per message at 100 sessions, relay-stream against engine.io's whole server: " \
           "70.0 vs 100.0 µs = 0.70 x (target ≤ 0.75 x) — **met**." in lines
    assert any("at 1,000 sessions, relay-stream" in x and "0.80 x" in x and "**not met**" in x for x in lines)
    # the total is every process polysocket runs against the bridge and the target it runs
    assert any("at 100 sessions, polysocket-stream against the engineio-bridge" in x and "100.0 vs 180.0 µs = 0.56 x"
               in x and "**met**" in x for x in lines)
    assert any("at 1,000 sessions, polysocket-stream against the engineio-bridge" in x and "0.60 x" in x
               and "**met**" in x for x in lines)
    assert any("at 1,000 sessions, polysocket-stream against the sockjs-bridge" in x and "0.50 x (reported)" in x
               for x in lines)
    assert any("at 100 sessions, polysocket-stream against the sockjs-bridge" in x and "not shown" in x
               for x in lines)
    assert all("not shown" in x for x in lines if " at 1 session," in x)
