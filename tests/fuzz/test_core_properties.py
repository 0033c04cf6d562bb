"""Properties of the pure core under hypothesis: whatever order, repetition and chunking the sends
arrive in, the target gets each message once and in order; the outbound buffer redelivers exactly
what is unacknowledged; every parser either returns a typed value or raises ``PolysocketError``;
JSONP answers are a dotted callback around JSON that round-trips and holds no raw line separator.
No I/O: ``PSTEST_FAULTS=full`` only raises the number of examples."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from polysocket_core import edge, wire
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.lifecycle import MAX_CLOSE_REASON_BYTES, TRANSITIONS, SocketState, can_move, clip_reason
from polysocket_core.sequencing import Frame, InboundSequencer, OutboundBuffer, poll_answer
from tests.faults.conftest import current_profile

pytestmark = pytest.mark.faults

PROFILE = current_profile()
# The CI profile draws the same examples every run (derandomized); the full one explores.
fuzz = settings(max_examples=PROFILE.fuzz_examples, deadline=None, database=None, derandomize=not PROFILE.explore,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A message is a kind and its chunks (the client splits long messages over several sends).
messages = st.lists(st.tuples(st.sampled_from("tb"), st.lists(st.binary(max_size=40), min_size=1, max_size=4)),
                    min_size=1, max_size=30)


def as_sends(msgs: list[tuple[str, list[bytes]]]) -> list[tuple[int, str, bool, bytes]]:
    sends: list[tuple[int, str, bool, bytes]] = []
    for kind, chunks in msgs:
        for i, chunk in enumerate(chunks):
            sends.append((len(sends), kind, i == len(chunks) - 1, chunk))
    return sends


@fuzz
@given(msgs=messages, data=st.data())
def test_sends_in_any_order_with_retries_make_each_message_once_in_order(
        msgs: list[tuple[str, list[bytes]]], data: st.DataObject) -> None:
    sends = as_sends(msgs)
    # What the network does: every send arrives at least once, in a shuffled order, some twice.
    arrivals = sends + data.draw(st.lists(st.sampled_from(sends), max_size=len(sends)))
    arrivals = data.draw(st.permutations(arrivals))
    seq = InboundSequencer(max_message=10_000, max_ahead=1024)
    frames: list[Frame] = []
    for s, kind, fin, chunk in arrivals:
        frames += seq.accept(s, kind, fin, chunk, 0.0)
    assert [(f.kind, f.data) for f in frames] == [(k, b"".join(c)) for k, c in msgs]
    assert [f.seq for f in frames] == [i for i, (_, _, fin, _) in enumerate(sends) if fin]
    assert seq.expected == len(sends) and seq.gap_since is None
    for s, kind, fin, chunk in sends:  # every retry after the fact is a duplicate
        assert seq.is_duplicate(s) and seq.accept(s, kind, fin, chunk, 0.0) == []


@fuzz
@given(chunks=st.lists(st.binary(min_size=1, max_size=30), min_size=1, max_size=10), limit=st.integers(1, 200))
def test_a_message_over_the_limit_is_refused_at_the_chunk_that_crosses_it(chunks: list[bytes], limit: int) -> None:
    seq = InboundSequencer(max_message=limit)
    total = 0
    for i, chunk in enumerate(chunks):
        total += len(chunk)
        fin = i == len(chunks) - 1
        if total > limit:
            with pytest.raises(PolysocketError) as exc:
                seq.accept(i, "b", fin, chunk, 0.0)
            assert exc.value.code is ErrorCode.PAYLOAD_TOO_LARGE
            return
        out = seq.accept(i, "b", fin, chunk, 0.0)
        assert out == ([Frame("b", b"".join(chunks))] if fin else [])


@fuzz
@given(start=st.integers(0, 5), ahead=st.integers(1, 3000))
def test_sends_too_far_ahead_are_a_gap_error_and_never_held(start: int, ahead: int) -> None:
    seq = InboundSequencer(max_message=100, max_ahead=1024)
    for i in range(start):
        seq.accept(i, "t", True, b"x", 0.0)
    if ahead >= 1024:
        with pytest.raises(PolysocketError) as exc:
            seq.accept(start + ahead, "t", True, b"x", 0.0)
        assert exc.value.code is ErrorCode.SEQUENCE_GAP
        assert not seq.is_duplicate(start + ahead)
    else:
        assert seq.accept(start + ahead, "t", True, b"x", 0.0) == []
        assert seq.gap_since == 0.0 and seq.missing_seq == start


ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.binary(min_size=1, max_size=50)),
    st.tuples(st.just("ack"), st.integers(-1, 60)),
    st.tuples(st.just("take"), st.integers(1, 200)),
), max_size=80)


@fuzz
@given(ops=ops)
def test_outbound_buffer_redelivers_exactly_the_unacknowledged(ops: list[tuple[str, Any]]) -> None:
    buf = OutboundBuffer()
    model: list[tuple[int, bytes]] = []  # unacknowledged, oldest first
    acked = -1
    for op, arg in ops:
        if op == "push":
            fragment = b'{"seq":%d,"d":"%b"}' % (buf.next_seq, base64.b64encode(arg))
            model.append((buf.next_seq, fragment))
            buf.push(fragment)
        elif op == "ack":
            if arg >= buf.next_seq:  # above the last seq ever queued: refused, nothing changes
                with pytest.raises(PolysocketError):
                    buf.ack(arg)
                continue
            acked = max(acked, arg)
            buf.ack(arg)
            model = [(s, f) for s, f in model if s > arg]
        else:
            got = buf.take(arg)
            expected = [f for _, f in model]
            assert got == expected[: len(got)]
            assert bool(got) == bool(expected)  # at least one when anything is pending
            assert len(got) == 1 or sum(map(len, got)) <= arg
            answer = orjson.loads(poll_answer(got))
            assert answer["ok"] is True and len(answer["messages"]) == max(len(got), 1)
        assert len(buf) == len(model)
        assert buf.unacked_bytes == sum(len(f) for _, f in model)
        assert buf.last_seq == (model[-1][0] if model else -1)


@fuzz
@given(raw=st.binary(max_size=300))
def test_parse_query_is_parse_qsl_or_a_bad_request(raw: bytes) -> None:
    try:
        params = wire.parse_query(raw)
    except PolysocketError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST
        return
    qs = raw.decode("ascii")
    assert params == dict(parse_qsl(qs, keep_blank_values=True, errors="strict"))


query_text = st.text(st.characters(codec="utf-8"), max_size=60)
# "\u0661" is an Arabic-Indic digit: isdigit() is true, but it is no ASCII digit.
param_values = st.one_of(query_text, st.integers(-(2**64), 2**64).map(str), st.sampled_from(
    ["", "0", "1", "-1", "t", "b", "ws://127.0.0.1/", "wss://a.b/c", "9007199254740991", "9007199254740992",
     "AAAA", "=", "%", "\x00", "a" * 32, "-" * 22, "1e3", " 1", "1 ", "+1", "0x10", "\u0661"]))
param_dicts = st.dictionaries(st.sampled_from(["socket", "seq", "t", "d", "fin", "ttl", "ack", "code", "reason",
                                               "target", "from", "token", "protocols", "cb", "pad"]),
                              param_values, max_size=8)


@fuzz
@given(params=param_dicts, body=st.one_of(st.none(), st.binary(max_size=40)), raw=st.booleans(),
       last_event_id=st.one_of(st.none(), st.binary(max_size=24), param_values.map(str.encode)))
def test_every_parser_returns_a_typed_value_or_a_polysocket_error(params: dict[str, str], body: bytes | None,
                                                                  raw: bool, last_event_id: bytes | None) -> None:
    for parse in (wire.parse_poll, wire.parse_close, wire.parse_connect,
                  lambda p: wire.parse_send(p, body, raw_binary=raw),
                  lambda p: wire.parse_stream(p, last_event_id=last_event_id)):
        try:
            result = parse(params)
        except PolysocketError as exc:
            assert exc.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_SOCKET), exc.code
            continue
        if isinstance(result, wire.SendParams):
            assert 0 <= result.seq <= wire.MAX_SEQ and result.kind in ("t", "b")
            if result.kind == "t":
                result.data.decode("utf-8")
        elif isinstance(result, wire.PollParams):
            assert 0 <= result.ttl_ms <= wire.MAX_POLL_TTL_MS and -1 <= result.ack <= wire.MAX_SEQ
        elif isinstance(result, wire.StreamParams):
            assert wire.MIN_STREAM_TTL_MS <= result.ttl_ms <= wire.MAX_POLL_TTL_MS
            assert -1 <= result.ack <= wire.MAX_SEQ and "cb" not in params
        elif isinstance(result, wire.CloseParams):
            # 1000, 1001 or an application code; or no code at all (then no reason either), which
            # the parser stands for with CLOSE_NO_STATUS, as a close frame without a status code.
            no_status = result.code == wire.CLOSE_NO_STATUS and not params.get("code") and not result.reason
            assert result.code in (1000, 1001) or 3000 <= result.code <= 4999 or no_status, result
            assert len(result.reason.encode("utf-8", "surrogatepass")) <= 123


@fuzz
@given(target=st.one_of(st.text(max_size=80), st.builds(lambda s, h, rest: f"{s}://{h}{rest}",
                                                        st.sampled_from(["ws", "wss", "http", "WS", "ws "]),
                                                        st.text(max_size=20), st.text(max_size=30))))
def test_an_accepted_target_is_a_plain_ws_url(target: str) -> None:
    try:
        wire.parse_target(target)
    except PolysocketError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST
        return
    parts = urlsplit(target)
    assert parts.scheme in ("ws", "wss") and parts.hostname
    assert parts.username is None and parts.password is None and not parts.fragment
    assert len(target) <= wire.MAX_TARGET_LENGTH and all(0x21 <= ord(c) != 0x7F for c in target)


CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*)*")


@fuzz
@given(cb=st.one_of(st.text(max_size=140), st.from_regex(CALLBACK, fullmatch=True)))
def test_a_callback_is_accepted_only_if_it_is_a_dotted_identifier(cb: str) -> None:
    ok = CALLBACK.fullmatch(cb) is not None and len(cb) <= edge.MAX_CALLBACK_LENGTH and cb.isascii()
    try:
        assert edge.validate_callback(cb) == cb
    except PolysocketError as exc:
        assert exc.code is ErrorCode.BAD_CALLBACK and exc.status == 400
        assert not ok
        return
    assert ok


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(st.characters(codec="utf-8")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@fuzz
@given(cb=st.from_regex(CALLBACK, fullmatch=True).filter(lambda c: len(c) <= 128), payload=json_values)
def test_a_jsonp_answer_is_the_callback_around_json_that_round_trips(cb: str, payload: Any) -> None:
    assume(cb.isascii())
    status, headers, body = edge.render(cb, payload)
    assert status == 200 and (b"content-type", edge.JS_CONTENT_TYPE) in headers
    assert (b"x-content-type-options", b"nosniff") in headers
    prefix = b"/**/" + cb.encode() + b"("
    assert body.startswith(prefix) and body.endswith(b");")
    inner = body[len(prefix):-2]
    assert orjson.loads(inner) == payload
    assert b"\xe2\x80\xa8" not in body and b"\xe2\x80\xa9" not in body  # line separators end a JS line
    text = inner.decode("utf-8")
    assert "\n" not in text and "\r" not in text


@fuzz
@given(seq=st.integers(0, wire.MAX_SEQ), data=st.text(st.characters(codec="utf-8"), max_size=100),
       raw=st.binary(max_size=100))
def test_message_fragments_are_json_that_round_trips(seq: int, data: str, raw: bytes) -> None:
    text = orjson.loads(wire.text_fragment(seq, data))
    assert text == {"seq": seq, "type": "text", "data": data}
    binary = orjson.loads(wire.binary_fragment(seq, raw))
    assert binary["seq"] == seq and base64.b64decode(binary["data"]) == raw
    assert b"\xe2\x80\xa8" not in wire.text_fragment(seq, data)


@fuzz
@given(reason=st.text(st.characters(codec="utf-8"), max_size=200))
def test_a_clipped_close_reason_fits_a_close_frame_and_is_a_prefix(reason: str) -> None:
    clipped = clip_reason(reason)
    assert len(clipped.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES
    assert reason.startswith(clipped)
    if len(reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES:
        assert clipped == reason


@fuzz
@given(walk=st.lists(st.sampled_from(list(SocketState)), max_size=12))
def test_a_socket_state_only_moves_forward_and_freed_is_final(walk: list[SocketState]) -> None:
    order = list(SocketState)
    state = SocketState.OPEN
    for new in walk:
        if can_move(state, new):
            assert order.index(new) > order.index(state)
            state = new
        else:
            assert new not in TRANSITIONS[state]
    if state is SocketState.FREED:
        assert not any(can_move(state, s) for s in SocketState)
