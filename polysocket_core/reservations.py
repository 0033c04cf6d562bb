"""A socket's place against its token's limit, owned by one object from pick to release (no I/O).

The life of a reservation (the socket limit of a token, docs/protocol.md "Control plane"):

1. **Picked**: the router's pick script adds the establish request's id to the token's
   ``resv:{token}`` sorted set (and to the chosen node's ``node:{id}:resv``), scored with an
   expiry. Until settled, it counts there (while the node is alive).
2. **Taken**: the node takes the request from its inbox and creates a ``Reservation``
   (``TokenLedger.take``). From now on the node counts it in its own absolute per-token counts
   (``TokenLedger.counts``) for as long as the request is being opened or the socket lives.
3. **Settled**: the node's next heartbeat rewrites its ``node:{id}:tokens`` hash (and its share
   of the token totals) from those counts and removes the taken requests from the ``resv`` sets,
   in one script: the reservation
   moves from one count to the other and is never counted twice nor missing.
4. **Released**: the socket is freed, or the open failed or was refused (``Reservation.release``,
   idempotent). The next heartbeat's counts no longer include it.

Counts are absolute and rewritten on every heartbeat, and reservations in flight expire by
themselves, so every count heals within a heartbeat after Redis loses its data, and none can go
below zero; a dead node's counts and reservations stop counting when it is retired (by the first
script after its ``alive`` key expires). A request withdrawn by the router before the node took it
is removed from the ``resv`` sets by the router itself.
"""

from __future__ import annotations

import collections


class Reservation:
    """One socket's reservation on this node; ``token_id`` is ``""`` for a socket without a token."""

    __slots__ = ("_ledger", "released", "request_id", "token_id")

    def __init__(self, ledger: TokenLedger, request_id: str, token_id: str) -> None:
        self._ledger = ledger
        self.request_id = request_id
        self.token_id = token_id
        self.released = False

    def release(self) -> None:
        """Give the reservation back (once; later calls do nothing)."""
        if not self.released:
            self.released = True
            self._ledger._release(self)

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"Reservation({self.request_id!r}, token={self.token_id!r}, {state})"


class TokenLedger:
    """The node's reservations: absolute per-token counts and the taken requests not yet settled."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._unsettled: list[tuple[str, str]] = []  # (token id, request id) taken since the last beat

    def take(self, request_id: str, token_id: str) -> Reservation:
        res = Reservation(self, request_id, token_id)
        if token_id:
            self._counts[token_id] += 1
            self._unsettled.append((token_id, request_id))
        return res

    def _release(self, res: Reservation) -> None:
        if res.token_id:
            left = self._counts[res.token_id] - 1
            if left > 0:
                self._counts[res.token_id] = left
            else:
                del self._counts[res.token_id]

    def count(self, token_id: str) -> int:
        return self._counts.get(token_id, 0)

    def counts(self) -> dict[str, int]:
        """Reservations held per token, right now (what the heartbeat publishes)."""
        return dict(self._counts)

    def begin_settle(self) -> list[tuple[str, str]]:
        """The taken requests to remove from the ``resv:`` sets with this heartbeat's counts."""
        out, self._unsettled = self._unsettled, []
        return out

    def settle_failed(self, batch: list[tuple[str, str]]) -> None:
        """The heartbeat did not reach Redis: settle these with the next one."""
        self._unsettled[:0] = batch
