"""The pure parts of ``GET /stream``: event framing, budgets, parameters, the buffer's ``after``."""

from __future__ import annotations

import orjson
import pytest

from polysocket_core import sse, wire
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.sequencing import OutboundBuffer

SID = "A" * 32


def test_opening_is_short_or_the_2kib_prelude() -> None:
    assert sse.opening(False) == b":ok\n\n"
    pad = sse.opening(True)
    assert pad == b":" + b" " * 2048 + b"\n\n" and len(pad) > 2048


def test_an_event_carries_the_seq_as_id_and_the_fragment_on_one_data_line() -> None:
    fragment = wire.text_fragment(7, "line one\nline two\r\n\u2028")
    ev = sse.event(7, fragment)
    assert ev.startswith(b"id: 7\ndata: ") and ev.endswith(b"\n\n")
    assert ev.count(b"\n") == 3 and b"\r" not in ev  # JSON escapes CR and LF: one data line
    assert orjson.loads(ev[len(b"id: 7\ndata: "):-2]) == {"seq": 7, "type": "text",
                                                          "data": "line one\nline two\r\n\u2028"}
    assert sse.events([(1, b"{}"), (2, b"[]")]) == b"id: 1\ndata: {}\n\nid: 2\ndata: []\n\n"


def test_the_byte_budget_is_spent_by_the_write_that_goes_past_it() -> None:
    clock = sse.StreamClock(now=0.0, heartbeat_s=25.0, max_bytes=100, max_seconds=120.0)
    assert not clock.wrote_events(60, 1.0)
    assert not clock.wrote_events(40, 2.0)  # exactly at the budget: not past it
    assert clock.wrote_events(1, 3.0) and clock.over_budget()


def test_heartbeat_only_after_a_quiet_interval_and_the_time_budget_ends() -> None:
    clock = sse.StreamClock(now=100.0, heartbeat_s=10.0, max_bytes=1 << 20, max_seconds=25.0)
    assert clock.next_due() == 110.0
    clock.wrote_events(10, 105.0)  # a message resets the quiet interval without re-arming a timer
    assert clock.tick(110.0) is sse.Tick.WAIT
    assert clock.next_due() == 115.0
    assert clock.tick(115.0) is sse.Tick.HEARTBEAT
    assert clock.next_due() == 125.0  # the deadline (100 + 25) and the next beat coincide
    assert clock.tick(124.9) is sse.Tick.WAIT
    assert clock.tick(125.0) is sse.Tick.END


def test_heartbeats_count_in_the_byte_budget() -> None:
    # Issue 21: heartbeats were not counted, so a stream whose client reads nothing queued them
    # without bound (40 -> 879 MiB in 8 s with a busy-loop heartbeat). Now they spend the budget.
    beat = len(sse.HEARTBEAT)
    clock = sse.StreamClock(now=0.0, heartbeat_s=1.0, max_bytes=3 * beat, max_seconds=1e9)
    assert [clock.tick(float(t)) for t in range(1, 5)] == [sse.Tick.HEARTBEAT] * 3 + [sse.Tick.END]
    assert clock.written == 4 * beat and clock.over_budget()


def test_next_due_never_passes_the_deadline() -> None:
    clock = sse.StreamClock(now=0.0, heartbeat_s=25.0, max_bytes=1, max_seconds=3.0)
    assert clock.next_due() == 3.0


def test_parse_stream_defaults_and_caps() -> None:
    p = wire.parse_stream({"socket": SID})
    assert p == wire.StreamParams(socket=SID, ack=-1, ttl_ms=wire.DEFAULT_POLL_TTL_MS, pad=False)
    p = wire.parse_stream({"socket": SID, "ttl": "999999", "ack": "4", "pad": "1"}, max_ttl_ms=30_000)
    assert (p.ttl_ms, p.ack, p.pad) == (30_000, 4, True)


@pytest.mark.parametrize("ttl", ["1", "2", "999"])
def test_a_heartbeat_interval_below_the_floor_is_raised_to_it(ttl: str) -> None:
    # A 1 ms heartbeat would cost a timer callback per millisecond per stream and queue ~1 MB of
    # heartbeats over a stream's 120 s for a client that does not read: clamped like the cap.
    p = wire.parse_stream({"socket": SID, "ttl": ttl})
    assert p.ttl_ms == wire.MIN_STREAM_TTL_MS == 1000

@pytest.mark.parametrize(("ttl", "cap", "expected"), [
    ("1000", 500, 1000), ("5000", 0, 1000), ("5000", 1, 1000), ("1", 0, 1000), ("5000", 2000, 2000),
    ("999999", wire.MAX_POLL_TTL_MS, wire.MAX_POLL_TTL_MS),
])
def test_the_heartbeat_floor_is_applied_after_the_cap(ttl: str, cap: int, expected: int) -> None:
    # Issue 21: with the cap applied last, `--max-poll-ttl 0` made every stream heartbeat in a busy
    # loop (125,371 heartbeats a second on one stream). The floor now wins over every cap.
    assert wire.parse_stream({"socket": SID, "ttl": ttl}, max_ttl_ms=cap).ttl_ms == expected
    assert wire.heartbeat_interval_ms(int(ttl), cap) == expected


@pytest.mark.parametrize(("header", "ack", "expected"), [
    (b"9", "4", 9), (b"2", "4", 4), (None, "4", 4), (b"x", "4", 4), (b"-3", "-1", -1), (b"", "-1", -1),
    (b"99999999999999999999", "1", 1), (str(wire.MAX_SEQ).encode(), "-1", wire.MAX_SEQ),
    (str(wire.MAX_SEQ + 1).encode(), "-1", -1),
])
def test_last_event_id_raises_the_ack_when_valid(header: bytes | None, ack: str, expected: int) -> None:
    # parsed apart from ``ack``: the socket ignores one above its last seq queued (it refuses such an ack)
    p = wire.parse_stream({"socket": SID, "ack": ack}, last_event_id=header)
    assert max(p.ack, p.last_event_id) == expected and p.ack == int(ack)


@pytest.mark.parametrize(("params", "code"), [
    ({"socket": SID, "ttl": "0"}, ErrorCode.BAD_REQUEST),
    ({"socket": SID, "cb": "f"}, ErrorCode.BAD_REQUEST),
    ({"socket": SID, "pad": "yes"}, ErrorCode.BAD_REQUEST),
    ({"socket": SID, "ack": "-2"}, ErrorCode.BAD_REQUEST),
    ({"socket": "bad id"}, ErrorCode.UNKNOWN_SOCKET),
    ({}, ErrorCode.BAD_REQUEST),
])
def test_parse_stream_refuses(params: dict[str, str], code: ErrorCode) -> None:
    with pytest.raises(PolysocketError) as err:
        wire.parse_stream(params)
    assert err.value.code is code


def test_sends_carry_an_optional_ack() -> None:
    assert wire.parse_send({"socket": SID, "seq": "0", "d": "x"}).ack == -1
    assert wire.parse_send({"socket": SID, "seq": "0", "d": "x", "ack": "12"}).ack == 12
    frames = wire.parse_send_batch({"socket": SID, "ack": "3"}, b'[[0,"t",1,"a"],[1,"t",1,"b"]]')
    assert [f.ack for f in frames] == [3, 3]
    with pytest.raises(PolysocketError):
        wire.parse_send({"socket": SID, "seq": "0", "d": "x", "ack": "nope"})


def test_buffer_after_gives_what_a_stream_has_not_written() -> None:
    buf = OutboundBuffer()
    for i in range(6):
        buf.push(b"m%d" % i)
    assert [s for s, _ in buf.after(-1, 1 << 20)] == [0, 1, 2, 3, 4, 5]
    assert [s for s, _ in buf.after(3, 1 << 20)] == [4, 5]
    assert buf.after(5, 1 << 20) == []
    assert [s for s, _ in buf.after(-1, 5)] == [0, 1, 2]  # up to the one that goes past the size
    buf.ack(2)  # acked by a send while the stream was at 1: it goes on from the first unacked
    assert [s for s, _ in buf.after(1, 1 << 20)] == [3, 4, 5]
    buf.ack(5)
    assert buf.after(-1, 1 << 20) == []


def test_events_within_stop_after_the_event_that_crosses_the_budget() -> None:
    items = [(i, b'{"seq":%d}' % i) for i in range(8, 14)]  # 10-11 byte fragments, 24-25 byte events
    whole = sse.events(items)
    assert sse.events_within(items, 10_000) == (whole, 6)
    data, n = sse.events_within(items, 60)
    assert n == 3 and data == sse.events(items[:3])  # 24 + 24 = 48 <= 60 < 48 + 25
    assert sse.events_within(items, 48) == (sse.events(items[:3]), 3)  # exactly at the budget: not past it
    assert sse.events_within(items, 0) == (sse.events(items[:1]), 1)  # always at least one
