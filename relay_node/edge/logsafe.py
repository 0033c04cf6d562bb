"""Log lines a client cannot inflate and that never carry a secret in full.

Request data is attacker-sized (URLs up to 128 KiB) and socket ids are bearer credentials: a log
line gets a clipped, redacted description of the request and the exception, never the raw URL.
"""

from __future__ import annotations

import logging
import re
import traceback

MAX_FIELD = 200  # characters of any one client-supplied or exception-derived field
MAX_TRACE = 4000  # characters of the frames of a traceback (code locations only, no values)

# Socket ids are 32 URL-safe base64 characters, tokens ``pst_`` + more: any long run of that
# alphabet keeps a short prefix (enough to correlate lines) and loses the rest.
_SECRETISH = re.compile(r"[A-Za-z0-9_\-]{16,}")


def _mask(m: re.Match[str]) -> str:
    return m.group()[:6] + "…"


def redact(text: str, limit: int = MAX_FIELD) -> str:
    """Clip ``text`` and mask anything that looks like a socket id or token."""
    if len(text) > limit:
        text = text[:limit] + f"…(+{len(text) - limit} chars)"
    return _SECRETISH.sub(_mask, text)


def describe_target(path: str, known: frozenset[str] | set[str]) -> str:
    """The request as a log line may name it: a known route, or only the size of an unknown one."""
    return path if path in known else f"<unrouted path, {len(path)} chars>"


def log_internal(log: logging.Logger, where: str, exc: BaseException) -> None:
    """An unexpected exception, with where it happened but no request data and a bounded size.

    ``log.exception`` would print the exception's message in full (httptools' used to hold the
    whole URL) and any chained exception's too.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    if len(frames) > MAX_TRACE:
        frames = "…" + frames[-MAX_TRACE:]
    log.error("internal error on %s: %s: %s\n%s", where, type(exc).__name__, redact(str(exc)), frames.rstrip())
