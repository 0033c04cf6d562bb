"""Sequencing both ways (pure): order, duplicates, gaps, chunks, acks, batching."""

from __future__ import annotations

import pytest

from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.sequencing import Frame, InboundSequencer, OutboundBuffer, poll_answer


def test_in_order_frames_pass_through() -> None:
    s = InboundSequencer(max_message=100)
    assert s.accept(0, "t", True, b"a", 0) == [Frame("t", b"a")]
    assert s.accept(1, "b", True, b"b", 0) == [Frame("b", b"b")]


def test_duplicates_are_dropped() -> None:
    s = InboundSequencer(max_message=100)
    s.accept(0, "t", True, b"a", 0)
    assert s.accept(0, "t", True, b"a", 0) == []
    assert s.accept(2, "t", True, b"c", 0) == []
    assert s.accept(2, "t", True, b"c", 0) == []  # held one repeated
    assert s.accept(1, "t", True, b"b", 0) == [Frame("t", b"b"), Frame("t", b"c")]


def test_out_of_order_is_reordered_and_gap_tracked() -> None:
    s = InboundSequencer(max_message=100)
    assert s.accept(2, "t", True, b"c", 1.0) == []
    assert s.accept(1, "t", True, b"b", 2.0) == []
    assert s.gap_since == 1.0
    assert not s.gap_expired(5.0, 10)
    assert s.gap_expired(12.0, 10)
    assert s.accept(0, "t", True, b"a", 3.0) == [Frame("t", b"a"), Frame("t", b"b"), Frame("t", b"c")]
    assert s.gap_since is None


def test_too_far_ahead_is_a_gap_error() -> None:
    s = InboundSequencer(max_message=100, max_ahead=4)
    with pytest.raises(PolysocketError) as err:
        s.accept(4, "t", True, b"x", 0)
    assert err.value.code is ErrorCode.SEQUENCE_GAP


def test_chunks_join_and_limit() -> None:
    s = InboundSequencer(max_message=6)
    assert s.accept(0, "b", False, b"ab", 0) == []
    assert s.accept(1, "b", False, b"cd", 0) == []
    assert s.accept(2, "b", True, b"ef", 0) == [Frame("b", b"abcdef")]
    s.accept(3, "t", False, b"1234", 0)
    with pytest.raises(PolysocketError) as err:
        s.accept(4, "t", True, b"567", 0)
    assert err.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_chunk_type_change_is_refused() -> None:
    s = InboundSequencer(max_message=100)
    s.accept(0, "t", False, b"a", 0)
    with pytest.raises(PolysocketError):
        s.accept(1, "b", True, b"b", 0)


def test_held_bytes_are_bounded() -> None:
    s = InboundSequencer(max_message=10, max_held_bytes=5)
    s.accept(1, "t", True, b"abc", 0)
    with pytest.raises(PolysocketError) as err:
        s.accept(2, "t", True, b"def", 0)
    assert err.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_outbound_ack_and_redelivery() -> None:
    b = OutboundBuffer()
    for i in range(3):
        b.push(b'{"seq":%d}' % i)
    assert b.take(1000) == [b'{"seq":0}', b'{"seq":1}', b'{"seq":2}']
    assert b.take(1000) == b.take(1000)  # not acked: delivered again
    b.ack(1)
    assert b.take(1000) == [b'{"seq":2}'] and b.last_seq == 2
    b.ack(-1)  # stale ack is harmless
    assert len(b) == 1
    b.ack(2)
    assert len(b) == 0 and b.unacked_bytes == 0


def test_outbound_batches_by_size_but_always_one() -> None:
    b = OutboundBuffer()
    b.push(b"x" * 100)
    b.push(b"y" * 100)
    assert b.take(10) == [b"x" * 100]
    assert b.take(250) == [b"x" * 100, b"y" * 100]


def test_poll_answer_shapes() -> None:
    assert poll_answer([]) == b'{"ok":true,"messages":[{"type":"heartbeat"}]}'
    assert poll_answer([b"1", b"2"]) == b'{"ok":true,"messages":[1,2]}'


def test_type_change_leaves_the_offending_send_unconsumed() -> None:
    s = InboundSequencer(max_message=100)
    s.accept(0, "t", False, b"x", 0)
    with pytest.raises(PolysocketError) as err:
        s.accept(1, "b", True, b"y", 0)
    assert err.value.code is ErrorCode.BAD_REQUEST
    assert s.expected == 1 and not s.is_duplicate(1)
