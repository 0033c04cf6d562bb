"""JSONP and JSON response encoding, hardened for script-tag delivery.

A JSONP answer is executed as script by the browser, so the callback name is the one piece of the
request that ends up as code: it must be a plain (dotted) identifier, nothing else.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .errors import ErrorCode, PolysocketError

MAX_CALLBACK_LENGTH = 128
_CALLBACK_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*")

JS_CONTENT_TYPE = b"application/javascript; charset=utf-8"
JSON_CONTENT_TYPE = b"application/json"

# Sent on every answer; JSONP bodies are scripts, never sniffed or cached.
COMMON_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
]
CORS_HEADERS: list[tuple[bytes, bytes]] = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type"),
    (b"access-control-max-age", b"600"),
]


def validate_callback(cb: str) -> str:
    """Return ``cb`` if it is a safe callback name, else raise ``bad_callback``."""
    if len(cb) > MAX_CALLBACK_LENGTH or _CALLBACK_RE.fullmatch(cb) is None:
        raise PolysocketError(
            ErrorCode.BAD_CALLBACK,
            f"cb must be a dotted JavaScript identifier of at most {MAX_CALLBACK_LENGTH} characters",
        )
    return cb


def dumps(payload: Any) -> bytes:
    """Compact JSON that is also safe inside a script (U+2028/U+2029 escaped)."""
    raw = orjson.dumps(payload)
    if b"\xe2\x80\xa8" in raw or b"\xe2\x80\xa9" in raw:
        raw = raw.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return raw


def jsonp_body(cb: str, json_bytes: bytes) -> bytes:
    """Wrap JSON as ``/**/cb(...);`` — the leading comment defeats content-sniffing tricks (Rosetta Flash)."""
    return b"/**/" + cb.encode("ascii") + b"(" + json_bytes + b");"


def render(cb: str | None, payload: Any, status: int = 200) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body for an answer: JSONP (always 200) when ``cb`` is given, JSON otherwise."""
    body = dumps(payload)
    if cb is not None:
        return 200, [(b"content-type", JS_CONTENT_TYPE), *COMMON_HEADERS], jsonp_body(cb, body)
    return status, [(b"content-type", JSON_CONTENT_TYPE), *COMMON_HEADERS, *CORS_HEADERS], body


def render_error(cb: str | None, error: PolysocketError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return render(cb, error.to_dict(), error.status)
