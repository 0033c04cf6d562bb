"""When the sweep must next look at each socket: a heap of due times with lazy deletion.

The table's sweep used to visit every socket every second (≈ 3 µs each), so an idle node spent CPU
in proportion to the sockets it held rather than to the ones with something due (issue 20, item 4).
Now each socket sits here under the earliest time one of its checks can change its mind (idle
timeout, claim deadline, ping or pong, gap hold, stall sample), and a sweep visits only those due.

Deadlines that move *later* (``last_seen`` on every request, a pong, a claim) cost nothing here:
the earlier entry stays, pops, the socket is found not due and is put back under its true time. So
the message path never touches this structure; only an event that makes a check due *earlier*
than planned (a gap opens, a write starts waiting, the socket closes) calls ``schedule``, which is
a dict look-up when the planned time is already earlier. Pure: the caller passes the clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# Rebuild the heap once stale entries (keys rescheduled earlier or removed) outnumber live ones by
# this factor: keeps memory bounded under socket churn without a compaction per removal.
_STALE_FACTOR = 2
_STALE_FLOOR = 64


class DueQueue(Generic[K]):
    """Keys, each due at some time; ``pop_due(now)`` takes the ones due by ``now``, earliest first."""

    __slots__ = ("_due", "_heap", "_order")

    def __init__(self) -> None:
        self._due: dict[K, float] = {}  # the time each key is due (the live heap entry's)
        self._heap: list[tuple[float, int, K]] = []  # (due, tie-breaker, key), live and stale entries
        self._order = itertools.count()  # keys need not be comparable

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def due_at(self, key: K) -> float | None:
        """When ``key`` is due, None when it is not queued."""
        return self._due.get(key)

    def schedule(self, key: K, at: float) -> None:
        """Have ``key`` due no later than ``at``: a later time than the one it has is ignored (the
        owner re-schedules it when it pops and finds nothing due)."""
        due = self._due.get(key)
        if due is not None and due <= at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        self._compact()

    def discard(self, key: K) -> None:
        """``key`` is gone: its heap entries turn stale."""
        if self._due.pop(key, None) is not None:
            self._compact()

    def pop_due(self, now: float) -> list[K]:
        """Every key due at or before ``now``, earliest first, taken out of the queue."""
        heap, due, out = self._heap, self._due, []
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            if due.get(key) == at:  # else stale: rescheduled earlier (and taken) or discarded
                del due[key]
                out.append(key)
        return out

    def next_due(self) -> float | None:
        """The earliest time any key is due (None when empty)."""
        heap, due = self._heap, self._due
        while heap and due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # stale on top: drop it now
        return heap[0][0] if heap else None

    def _compact(self) -> None:
        if len(self._heap) > _STALE_FACTOR * len(self._due) + _STALE_FLOOR:
            self._heap = [(at, next(self._order), key) for key, at in self._due.items()]
            heapq.heapify(self._heap)
