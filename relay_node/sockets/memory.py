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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

log = logging.getLogger("polysocket.relay")

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024  # free memory at the heap's top above this goes back at once
TRIM_AFTER_BYTES = 32 * 1024 * 1024  # released since the last malloc_trim


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


class Trimmer:
    """Counts released bytes; trims the heap when enough were released. One per process."""

    __slots__ = ("_trim", "after_bytes", "released", "trims")

    def __init__(self, after_bytes: int = TRIM_AFTER_BYTES,
                 trim: Callable[[int], int] | None = None) -> None:
        self.after_bytes = after_bytes
        self.released = 0  # bytes, since the last trim
        self.trims = 0
        self._trim = trim if trim is not None else (_LIBC.malloc_trim if _LIBC is not None else None)

    def maybe_trim(self) -> bool:
        """Trim if enough was released; True if it did."""
        if self.released < self.after_bytes or self._trim is None:
            return False
        released, self.released = self.released, 0
        started = time.perf_counter()
        self._trim(0)
        self.trims += 1
        log.debug("malloc_trim after %d MiB released: %.1f ms", released >> 20,
                  (time.perf_counter() - started) * 1000)
        return True


trimmer = Trimmer()
