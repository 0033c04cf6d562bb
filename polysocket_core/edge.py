"""The HTTP edge both services speak, written once: answers as JSON or JSONP, the ``cb`` parameter,
CORS preflight, and which error code a refused HTTP request carries.

The router (FastAPI under uvicorn or Mangum) and the relay (its own HTTP/1.1 protocol) answer the
same browsers, so a code, a header or a callback rule that differed between them would be a bug a
client sees; both take theirs from here. Pure: bytes and tuples in, bytes and tuples out.

A JSONP answer is executed as script by the browser, so the callback name is the one piece of the
request that ends up as code: it must be a plain (dotted) identifier, nothing else.

The header lists are module constants, never mutated: the relay formats each one once
(``relay_node.edge.http1.register_constant_headers``) and every answer that uses it costs no formatting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson

from .errors import ErrorCode, PolysocketError

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]

# --- cb -----------------------------------------------------------------------------------------

MAX_CALLBACK_LENGTH = 128
_CALLBACK_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*")


def validate_callback(cb: str) -> str:
    """Return ``cb`` if it is a safe callback name, else raise ``bad_callback``."""
    if len(cb) > MAX_CALLBACK_LENGTH or _CALLBACK_RE.fullmatch(cb) is None:
        raise PolysocketError(
            ErrorCode.BAD_CALLBACK,
            f"cb must be a dotted JavaScript identifier of at most {MAX_CALLBACK_LENGTH} characters",
        )
    return cb


def callback(params: Mapping[str, str]) -> str | None:
    """The request's JSONP callback (``cb``), None for a JSON answer; an unsafe one is ``bad_callback``."""
    raw = params.get("cb")
    return None if raw is None else validate_callback(raw)


# --- headers ------------------------------------------------------------------------------------

JS_CONTENT_TYPE = b"application/javascript; charset=utf-8"
JSON_CONTENT_TYPE = b"application/json"

# Sent on every answer; JSONP bodies are scripts, never sniffed or cached.
COMMON_HEADERS: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
]
# On every JSON answer and on the preflight. A client that sets Last-Event-ID itself (an
# EventSource polyfill on the relay's /stream) is preflighted for it; EventSource is not.
CORS_HEADERS: Headers = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type, last-event-id"),
    (b"access-control-max-age", b"600"),
]
JS_HEADERS: Headers = [(b"content-type", JS_CONTENT_TYPE), *COMMON_HEADERS]
JSON_HEADERS: Headers = [(b"content-type", JSON_CONTENT_TYPE), *COMMON_HEADERS, *CORS_HEADERS]
PREFLIGHT_HEADERS: Headers = [*COMMON_HEADERS, *CORS_HEADERS]  # the answer to OPTIONS: 204, no body
PREFLIGHT_STATUS = 204
CONSTANT_HEADERS = (JS_HEADERS, JSON_HEADERS, PREFLIGHT_HEADERS)


# --- the envelope -------------------------------------------------------------------------------

JSONP_FORMAT = b"/**/%b(%b);"  # the leading comment defeats content-sniffing tricks (Rosetta Flash)


def dumps(payload: Any) -> bytes:
    """Compact JSON that is also safe inside a script (U+2028/U+2029 escaped)."""
    raw = orjson.dumps(payload)
    if b"\xe2\x80\xa8" in raw or b"\xe2\x80\xa9" in raw:
        raw = raw.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return raw


def jsonp_body(cb: str, json_bytes: bytes) -> bytes:
    """Wrap JSON as ``/**/cb(...);``."""
    return JSONP_FORMAT % (cb.encode("ascii"), json_bytes)


def answer(cb: str | None, json_bytes: bytes, status: int = 200) -> Answer:
    """An answer around JSON already encoded (with :func:`dumps`): JSONP when ``cb`` is given, always
    200 (a script tag cannot read a status, the body says ``ok``), else JSON with ``status`` and CORS."""
    if cb is not None:
        return 200, JS_HEADERS, JSONP_FORMAT % (cb.encode("ascii"), json_bytes)
    return status, JSON_HEADERS, json_bytes


def render(cb: str | None, payload: Any, status: int = 200) -> Answer:
    """:func:`answer` for a payload not yet encoded."""
    return answer(cb, dumps(payload), status)


def render_error(cb: str | None, error: PolysocketError, status: int | None = None) -> Answer:
    """``{"ok": false, "error": code, "message": ...}`` with the code's status (or ``status``: a
    refusal's own, see :func:`refusal`). A ``bad_callback`` is never answered through that callback."""
    if error.code is ErrorCode.BAD_CALLBACK:
        cb = None
    return answer(cb, dumps(error.to_dict()), status or error.status)


# --- refusals: HTTP status -> error code --------------------------------------------------------

# The statuses a server's HTTP layer refuses a request with before any endpoint runs (the parser, a
# size limit, the framework's routing), and the protocol's code for each (docs/protocol.md,
# "Error codes"). Anything else is bad_request (4xx) or internal (5xx).
REFUSAL_CODES: Mapping[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,  # request body
    414: ErrorCode.PAYLOAD_TOO_LARGE,  # URL
    431: ErrorCode.PAYLOAD_TOO_LARGE,  # request head
    429: ErrorCode.RATE_LIMITED,
}


def code_for_status(status: int) -> ErrorCode:
    """The error code of a request refused with HTTP ``status`` by the HTTP layer."""
    code = REFUSAL_CODES.get(status)
    if code is not None:
        return code
    return ErrorCode.BAD_REQUEST if 400 <= status < 500 else ErrorCode.INTERNAL


def refusal(status: int, message: str, cb: str | None = None) -> Answer:
    """The answer to a request refused with ``status`` by the HTTP layer, carrying that status's code."""
    return render_error(cb, PolysocketError(code_for_status(status), message), status)


# --- HTTP/1.1 bytes -----------------------------------------------------------------------------

_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <phrase>\\r\\n``, made once per status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    return line


def header_block(headers: Headers) -> bytes:
    return b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)


def closing_refusal(status: int, message: str, extra_headers: bytes = b"") -> bytes:
    """A whole HTTP/1.1 refusal after which the server reads nothing more from the connection
    (a head or URL over the limit, a malformed request): :func:`refusal` with ``connection: close``.
    ``extra_headers``: formatted header lines the server adds (the relay's ``date``)."""
    _, headers, body = refusal(status, message)
    return b"%b%b%bcontent-length: %d\r\nconnection: close\r\n\r\n%b" % (
        status_line(status), extra_headers, header_block(headers), len(body), body)
