"""A relayed socket's lifecycle and every close-code decision, as pure data and functions (no I/O).

States (``relay_node.sockets.socket.RelaySocket`` holds one and moves only along ``TRANSITIONS``)::

    OPEN ──close started──▶ CLOSING ──upstream ended──▶ CLOSED ──close acked / linger over──▶ FREED
      │                                                   ▲
      └──────────────upstream ended (target closed)───────┘
    OPEN, CLOSING ──idle timeout / connect abandoned / abort──▶ FREED

* ``OPEN``: relaying both ways, sends accepted.
* ``CLOSING``: the closing handshake with the target has started (client ``/close``, drain, kill, a
  broken send stream) or a send found the upstream gone: no more sends.
* ``CLOSED``: the final ``close`` message is queued; the socket is kept until the client
  acknowledges it, or for ``CLOSED_LINGER_S`` without a poll.
* ``FREED``: out of the table, its token reservation given back; requests get ``unknown_socket``.

Beside the state runs one named timer, the *claim*: a socket is opened for a router, which hands it
to a browser; until the first client request naming it (poll, stream, send or close) arrives it is
*unclaimed*. A router killed between the pick and its answer (a Lambda timeout or crash mid-connect)
never hands it on, so nobody would ever name it: a socket still unclaimed at its claim deadline
(``claim_deadline``: the request's expiry, the router's last moment to answer, plus the claim
margin for the browser's first request) is closed as ``ABANDONED``, which frees it and gives its
reservation back, instead of holding the target and the token's slot until the idle timeout.

The relay decides which close code the target receives (``decide_close``) and which one the client
finally sees (``client_close``) here, so each rule is written once and tested without servers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .wire import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
)

CLOSED_LINGER_S = 10.0  # keep a closed socket this long for a client that has not acked the close
MAX_CLOSE_REASON_BYTES = 123  # what fits in a close frame after the 2-byte code


class SocketState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    FREED = "freed"


TRANSITIONS: dict[SocketState, frozenset[SocketState]] = {
    SocketState.OPEN: frozenset({SocketState.CLOSING, SocketState.CLOSED, SocketState.FREED}),
    SocketState.CLOSING: frozenset({SocketState.CLOSED, SocketState.FREED}),
    SocketState.CLOSED: frozenset({SocketState.FREED}),
    SocketState.FREED: frozenset(),
}


def can_move(current: SocketState, new: SocketState) -> bool:
    return new in TRANSITIONS[current]


class CloseCause(enum.Enum):
    CLIENT = "client"  # GET /close: the client's own code and reason
    DRAIN = "drain"  # the node is shutting down (SIGTERM, after the grace period)
    KILL = "kill"  # the token was revoked with --kill
    TOO_BIG = "too_big"  # a message over --max-message
    BAD_STREAM = "bad_stream"  # the client's chunks broke the stream (a continuation changed type)
    GAP = "gap"  # a send never arrived within the gap hold
    IDLE = "idle"  # no poll for the idle timeout: nobody is left to tell
    ABANDONED = "abandoned"  # the router gave up on the connect before the socket was opened
    STALLED = "stalled"  # the target took none of a message the relay was writing for the stall limit


@dataclass(frozen=True, slots=True)
class CloseDecision:
    code: int  # sent to the target in the relay's close frame
    reason: str
    imposed: bool  # the client sees this code and reason, whatever the target answers
    frees: bool  # the socket leaves the table at once (no client will collect a close message)


# One row per cause the relay imposes: (code sent to the target, default reason, imposed, frees).
_IMPOSED: dict[CloseCause, tuple[int, str, bool, bool]] = {
    CloseCause.DRAIN: (CLOSE_GOING_AWAY, "relay draining", False, False),
    CloseCause.KILL: (CLOSE_POLICY, "token revoked", True, False),
    CloseCause.TOO_BIG: (CLOSE_TOO_BIG, "message too big", True, False),
    CloseCause.BAD_STREAM: (CLOSE_PROTOCOL_ERROR, "malformed send", True, False),
    CloseCause.GAP: (CLOSE_INTERNAL, "sequence gap", True, False),
    CloseCause.STALLED: (CLOSE_INTERNAL, "target stopped reading", True, False),
    CloseCause.IDLE: (CLOSE_GOING_AWAY, "idle timeout", False, True),
    CloseCause.ABANDONED: (CLOSE_GOING_AWAY, "connect abandoned", False, True),
}


def decide_close(cause: CloseCause, code: int | None = None, reason: str = "") -> CloseDecision:
    """How the relay closes the upstream for ``cause``; ``code``/``reason`` are the caller's details
    (the client's close code, the kill or gap reason)."""
    if cause is CloseCause.CLIENT:
        # The client learns how the target answered (usually its own code echoed back).
        return CloseDecision(code if code is not None else CLOSE_NORMAL, clip_reason(reason), False, False)
    close_code, default_reason, imposed, frees = _IMPOSED[cause]
    return CloseDecision(close_code, clip_reason(reason or default_reason), imposed, frees)


def client_close(imposed: tuple[int, str] | None, received: tuple[int, str] | None) -> tuple[int, str]:
    """The code and reason of the final ``close`` message the client gets.

    ``imposed``: what the relay decided (kill, too big, gap, ...), which wins. ``received``: the
    target's close frame (code 1005 when it carried none), ``None`` when the connection ended
    without a closing handshake, reported as 1006 as browsers do.
    """
    if imposed is not None:
        return imposed
    if received is None:
        return CLOSE_ABNORMAL, ""
    return received


class SweepVerdict(enum.Enum):
    UNCOLLECTED = "uncollected"  # CLOSED, and the client did not collect the close within the linger
    IDLE = "idle"  # no poll or send for the idle timeout
    UNCLAIMED = "unclaimed"  # opened for a router, and no client request named it by its claim deadline


def sweep_verdict(state: SocketState, quiet_for: float, poll_waiting: bool, idle_timeout: float,
                  linger: float = CLOSED_LINGER_S, claim_overdue: bool = False) -> SweepVerdict | None:
    """What the periodic sweep does with a socket nobody has touched for ``quiet_for`` seconds.
    ``claim_overdue``: still unclaimed past its claim deadline (no browser will come for it)."""
    if state is SocketState.FREED:
        return None
    if claim_overdue:
        return SweepVerdict.UNCLAIMED
    if poll_waiting:
        return None
    if state is SocketState.CLOSED and quiet_for > min(idle_timeout, linger):
        return SweepVerdict.UNCOLLECTED
    if quiet_for > idle_timeout:
        return SweepVerdict.IDLE
    return None


def claim_deadline(now: float, until_expiry: float, margin: float, idle_timeout: float) -> float:
    """When a socket opened at ``now`` (monotonic) must have been claimed by its browser.

    ``until_expiry``: seconds left before the establish request expires (the router's wall clock
    minus the node's; negative when already past). The router answers the browser before then or
    never: after it, it has given up on this node. ``margin``: the browser's first request after
    that answer (``RelayConfig.claim_margin_s``). Never later than the idle timeout, which bounds
    an unclaimed socket already: a node whose clock lags the router's gets today's bound, no worse.
    """
    return now + min(max(0.0, until_expiry) + margin, idle_timeout)


def clip_reason(reason: str) -> str:
    """``reason`` cut to what a close frame can carry, on a character boundary."""
    raw = reason.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return raw[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
