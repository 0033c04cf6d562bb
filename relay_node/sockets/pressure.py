"""The relay's memory for clients' messages, all sockets together (``--buffer-budget``).

``--buffer-bytes`` bounds what one socket holds for a client that does not collect; the capacity
times that bound (10,000 x 1 MiB with the defaults) is far more than a relay task's memory, so a few
thousand such clients, or targets flooding a few thousand sockets, could take the relay's memory and
with it every other socket on the node. This bounds what all of them hold together: the encoded
messages no client has acknowledged yet (``OutboundBuffer.unacked_bytes``, summed over the sockets).

While the total is at or above the budget, a socket that holds its share (``budget // capacity``,
at least ``MIN_SHARE``) or more parks after the message it just queued, exactly as at its own bound:
its upstream stops reading, so the target's further data waits in the kernel's and the target's
buffers, and nothing is dropped. A socket that is closing drops what is over its share, as it drops
what is over its own bound. Sockets below their share (clients that collect) go on. A parked socket
reads again when its client acknowledges below the bound then in force, or, all of them at once,
when the total falls below three quarters of the budget.

So the total stays below the budget (what was held when it was reached), plus each socket's growth
up to its share (``capacity * share``: the budget again, unless ``MIN_SHARE`` is larger), plus what
completed in the read that crossed a bound (up to one read, 256 KiB, of messages per socket: bytes
the relay had read already, which it holds raw in websockets' parser otherwise).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Protocol

log = logging.getLogger("polysocket.relay")

RESUME_FRACTION = 0.75  # parked sockets read again below this part of the budget (hysteresis)
MEMORY_FRACTION = 4  # the default budget: a quarter of the memory the relay may use
# The least a socket may hold under pressure: twice what polysocket.js lets a stream deliver before it
# renews it with its ack (STREAM_ACK_CHARS; tests/unit/test_client_constants.py ties the two), so a
# client that keeps up never parks waiting for an ack it would only send later.
MIN_SHARE = 64 * 1024
LOG_EVERY_S = 60.0  # at most one "budget reached" warning per minute
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"),  # cgroup v2: the task's or container's limit
                 Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))  # cgroup v1


class Parked(Protocol):
    """A socket parked on the budget: told when the total fell back (``RelaySocket.relieved``)."""

    def relieved(self) -> None: ...


class BufferBudget:
    """The bytes every socket holds for its client, against one budget; one per socket table."""

    __slots__ = ("_parked", "_pressed", "_warned_at", "budget", "held", "resume_below", "share")

    def __init__(self, budget: int | None, capacity: int) -> None:
        """``budget`` None: no budget (each socket's own bound only)."""
        self.budget = budget if budget is not None else 1 << 62
        self.share = max(MIN_SHARE, self.budget // max(1, capacity))
        self.resume_below = int(self.budget * RESUME_FRACTION)
        self.held = 0
        self._parked: set[Parked] = set()
        self._pressed = False  # at or over the budget since the last relief
        self._warned_at = -LOG_EVERY_S

    def bound(self, own: int) -> int:
        """Unacked bytes at which a socket parks now: its own bound, or its share under pressure."""
        return own if self.held < self.budget else min(own, self.share)

    def took(self, size: int, own: int) -> int:
        """``size`` more bytes are held; the bound in force for the socket that took them (``bound``)."""
        held = self.held = self.held + size
        if held < self.budget:
            return own
        if not self._pressed:
            self._pressed = True
            now = time.monotonic()
            if now - self._warned_at >= LOG_EVERY_S:
                self._warned_at = now
                log.warning("buffer budget reached: %d bytes held for clients (--buffer-budget %d); sockets "
                            "holding %d bytes or more pause reading their targets until acknowledged",
                            held, self.budget, self.share)
        return min(own, self.share)

    def released(self, size: int) -> None:
        """``size`` bytes were acknowledged or let go; below the resume mark every socket parked on
        the budget is told (each reads again unless its own bound still holds it)."""
        self.held -= size
        if self._pressed and self.held < self.resume_below:
            self._pressed = False
            parked, self._parked = self._parked, set()
            for sock in parked:
                try:
                    sock.relieved()
                except Exception:  # one socket's failure must not keep the others parked
                    log.exception("a socket parked on the buffer budget failed to resume")

    def park(self, sock: Parked) -> None:
        self._parked.add(sock)

    def forget(self, sock: Parked) -> None:
        self._parked.discard(sock)

    @property
    def parked(self) -> int:
        return len(self._parked)


def memory_limit(cgroup_limits: tuple[Path, ...] = CGROUP_LIMITS) -> int | None:
    """The memory this process may use: the machine's, or its cgroup's limit if that is lower (v2's
    ``max`` and v1's huge "unlimited" value are no limit)."""
    try:
        machine: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        machine = None
    for path in cgroup_limits:
        try:
            limit = int(path.read_text().strip())
        except (OSError, ValueError):  # absent, or v2's "max"
            continue
        return limit if machine is None else min(limit, machine)
    return machine


def budget_for(configured: int | None, limit: int | None) -> int | None:
    """``--buffer-budget`` as given, or a quarter of ``limit`` (None: no budget, limit unknown)."""
    if configured is not None:
        return configured
    return None if limit is None else limit // MEMORY_FRACTION
