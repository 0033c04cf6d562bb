"""The relay socket's lifecycle and close-code decisions, without servers."""

from __future__ import annotations

import pytest

from polysocket_core.lifecycle import (
    CLOSED_LINGER_S,
    MAX_CLOSE_REASON_BYTES,
    TRANSITIONS,
    CloseCause,
    SocketState,
    SweepVerdict,
    can_move,
    claim_deadline,
    client_close,
    clip_reason,
    decide_close,
    sweep_verdict,
)

OPEN, CLOSING, CLOSED, FREED = SocketState.OPEN, SocketState.CLOSING, SocketState.CLOSED, SocketState.FREED


def test_transitions_only_go_forward_and_freed_is_final() -> None:
    order = [OPEN, CLOSING, CLOSED, FREED]
    for a in SocketState:
        for b in SocketState:
            assert can_move(a, b) == (b in TRANSITIONS[a])
            if can_move(a, b):
                assert order.index(b) > order.index(a)
    assert TRANSITIONS[FREED] == frozenset()
    assert can_move(OPEN, CLOSED)  # the target closed first
    assert can_move(OPEN, FREED) and can_move(CLOSING, FREED)  # idle, abandoned, abort
    assert not can_move(CLOSED, CLOSING)


@pytest.mark.parametrize(("cause", "code", "reason", "expected"), [
    (CloseCause.CLIENT, 4000, "bye", (4000, "bye", False, False)),
    (CloseCause.CLIENT, None, "", (1000, "", False, False)),
    (CloseCause.DRAIN, 1001, "relay draining", (1001, "relay draining", False, False)),
    (CloseCause.KILL, None, "abuse", (1008, "abuse", True, False)),
    (CloseCause.KILL, None, "", (1008, "token revoked", True, False)),
    (CloseCause.TOO_BIG, None, "", (1009, "message too big", True, False)),
    (CloseCause.BAD_STREAM, None, "continuation chunk changes the frame type",
     (1002, "continuation chunk changes the frame type", True, False)),
    (CloseCause.GAP, None, "sequence gap: send 3 never arrived",
     (1011, "sequence gap: send 3 never arrived", True, False)),
    (CloseCause.STALLED, None, "", (1011, "target stopped reading", True, False)),
    (CloseCause.IDLE, None, "", (1001, "idle timeout", False, True)),
    (CloseCause.ABANDONED, None, "", (1001, "connect abandoned", False, True)),
])
def test_decide_close(cause: CloseCause, code: int | None, reason: str,
                      expected: tuple[int, str, bool, bool]) -> None:
    d = decide_close(cause, code, reason)
    assert (d.code, d.reason, d.imposed, d.frees) == expected


def test_every_cause_is_decided() -> None:
    for cause in CloseCause:
        d = decide_close(cause)
        assert 1000 <= d.code <= 4999 and d.code not in (1005, 1006)  # never sent on the wire


def test_client_close() -> None:
    assert client_close(None, (1000, "bye")) == (1000, "bye")  # the target's close frame
    assert client_close(None, (1005, "")) == (1005, "")  # a close frame without a code
    assert client_close(None, None) == (1006, "")  # no closing handshake
    assert client_close((1008, "revoked"), (1000, "")) == (1008, "revoked")  # the relay's decision wins
    assert client_close((1011, "gap"), None) == (1011, "gap")


def test_long_reasons_are_clipped_on_a_character_boundary() -> None:
    reason = "é" * 100  # 200 bytes
    clipped = clip_reason(reason)
    assert len(clipped.encode()) <= MAX_CLOSE_REASON_BYTES and reason.startswith(clipped)
    assert len(clipped) == 61
    assert decide_close(CloseCause.KILL, reason="x" * 500).reason == "x" * MAX_CLOSE_REASON_BYTES


def test_sweep_verdict() -> None:
    idle = 60.0
    assert sweep_verdict(OPEN, 61, False, idle) is SweepVerdict.IDLE
    assert sweep_verdict(OPEN, 61, True, idle) is None  # a waiting poll is not idle
    assert sweep_verdict(OPEN, 30, False, idle) is None
    assert sweep_verdict(CLOSING, 61, False, idle) is SweepVerdict.IDLE
    # A closed socket waits only the linger for its close to be collected, and says so (D11).
    assert sweep_verdict(CLOSED, CLOSED_LINGER_S + 1, False, idle) is SweepVerdict.UNCOLLECTED
    assert sweep_verdict(CLOSED, CLOSED_LINGER_S - 1, False, idle) is None
    assert sweep_verdict(CLOSED, 2, False, 1.0) is SweepVerdict.UNCOLLECTED  # idle timeout under the linger
    assert sweep_verdict(FREED, 1000, False, idle) is None


def test_an_unclaimed_socket_past_its_deadline_is_abandoned_whatever_its_state() -> None:
    idle = 60.0
    for state in (OPEN, CLOSING, CLOSED):
        assert sweep_verdict(state, 1, False, idle, claim_overdue=True) is SweepVerdict.UNCLAIMED
    assert sweep_verdict(FREED, 1, False, idle, claim_overdue=True) is None
    assert sweep_verdict(OPEN, 1, False, idle, claim_overdue=False) is None  # claimed or not yet due


def test_the_claim_deadline_is_the_requests_expiry_plus_the_margin_capped_by_the_idle_timeout() -> None:
    # the router may answer the browser until the request expires; the browser then has the margin
    assert claim_deadline(100.0, until_expiry=8.0, margin=10.0, idle_timeout=60.0) == 118.0
    # opened after the expiry (the router has given up, or the clocks disagree): the margin only
    assert claim_deadline(100.0, until_expiry=-3.0, margin=10.0, idle_timeout=60.0) == 110.0
    # a node whose clock lags the router's by minutes: never later than the idle timeout's bound
    assert claim_deadline(100.0, until_expiry=600.0, margin=10.0, idle_timeout=60.0) == 160.0
