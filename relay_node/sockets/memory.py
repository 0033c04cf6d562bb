"""Giving memory back to the system once the relay has freed it (issue 10, D1).

Python frees a closed socket's buffers at once, but glibc's malloc keeps what it got: large blocks
land in the heap once its adaptive mmap threshold has grown past them (it grows to the size of the
largest block freed, up to 32 MiB), and the heap's free pages are only returned from its top. So a
relay that buffered 3.9 MB messages for a few hundred sockets kept hundreds of MiB resident after
every one of them was freed. Two measures, both for glibc only (elsewhere they do nothing):

* ``configure()`` fixes the mmap threshold at ``MMAP_THRESHOLD`` (which also turns the adaptive
  growth off): blocks from 1 MiB up (message payloads, their encodings, large poll answers) get
  their own mapping and go back to the system when freed.
* ``Trimmer`` counts bytes released by the relay (acknowledged or dropped buffers) and calls
  ``malloc_trim(0)`` when enough were released since the last trim, for what is smaller and
  scattered through the heap. The sweeper asks it once a second.
* Not every release is the relay's to count: the write buffers of connections that close (a
  stalled stream's, up to its byte budget each) are the event loop's. So the trimmer also trims on
  a timer, every ``TRIM_EVERY_S``, while the process's RSS stands more than ``TRIM_AFTER_BYTES``
  above where it was at its first sweep (issue 21, D3: after receiver abuse RSS stayed at 205 MiB,
  start 55, until unrelated acks released 32 MB). A relay that holds that much in use pays one
  ``malloc_trim`` per interval (its cost is logged at debug level).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("polysocket.relay")

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024  # free memory at the heap's top above this goes back at once
TRIM_AFTER_BYTES = 32 * 1024 * 1024  # released since the last malloc_trim
TRIM_EVERY_S = 10.0  # the timer's interval, while RSS stands that much above the start


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None  # not glibc (musl, macOS)
    return libc


_LIBC = _libc()
_configured = False


def configure() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (once); False where it cannot."""
    global _configured
    if _LIBC is None:
        return False
    if not _configured:
        ok = _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = _LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
        _configured = ok
    return _configured


def resident_bytes() -> int:
    """This process's RSS (Linux ``/proc/self/statm``); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Trimmer:
    """Counts released bytes; trims the heap when enough were released, or on a timer while RSS
    stands well above the start. One per process; the clock and RSS are passed in for tests."""

    __slots__ = ("_rss", "_trim", "after_bytes", "base_rss", "every_s", "last_trim", "released", "trims")

    def __init__(self, after_bytes: int = TRIM_AFTER_BYTES,
                 trim: Callable[[int], int] | None = None, every_s: float = TRIM_EVERY_S,
                 rss: Callable[[], int] = resident_bytes) -> None:
        self.after_bytes = after_bytes
        self.released = 0  # bytes, since the last trim
        self.trims = 0
        self.every_s = every_s
        self.base_rss: int | None = None  # RSS at the first sweep: what the timer brings it back to
        self.last_trim = 0.0
        self._rss = rss
        self._trim = trim if trim is not None else (_LIBC.malloc_trim if _LIBC is not None else None)

    def maybe_trim(self, now: float | None = None) -> bool:
        """Trim if enough was released, or if the timer is due and RSS stands well above the
        start; True if it did."""
        if self._trim is None:
            return False
        now = time.monotonic() if now is None else now
        if self.released < self.after_bytes and not self._timer_due(now):
            return False
        self.last_trim = now
        released, self.released = self.released, 0
        started = time.perf_counter()
        self._trim(0)
        self.trims += 1
        log.debug("malloc_trim after %d MiB released: %.1f ms", released >> 20,
                  (time.perf_counter() - started) * 1000)
        return True

    def _timer_due(self, now: float) -> bool:
        """Every ``every_s``, while RSS is more than ``after_bytes`` above its first reading: the
        releases nobody counted (connections' write buffers) are given back too."""
        if self.base_rss is None:
            self.base_rss, self.last_trim = self._rss(), now
            return False
        if now - self.last_trim < self.every_s:
            return False
        if self._rss() - self.base_rss <= self.after_bytes:
            self.last_trim = now  # read again in an interval, not at every sweep
            return False
        return True


trimmer = Trimmer()
