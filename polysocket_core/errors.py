"""Typed error codes of the wire protocol and the HTTP status each maps to.

One table, used by both services, so a code always means the same thing and the docs can list them all.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    BAD_CALLBACK = "bad_callback"
    UNKNOWN_SOCKET = "unknown_socket"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    SEQUENCE_GAP = "sequence_gap"
    SOCKET_CLOSED = "socket_closed"
    NO_RELAY = "no_relay"
    UPSTREAM_FAILED = "upstream_failed"
    TIMEOUT = "timeout"
    DRAINING = "draining"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL = "internal"
    # Admission (router); see the admission seam in router_fn.admission.
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    FORBIDDEN_TARGET = "forbidden_target"
    BLOCKED_TARGET = "blocked_target"
    LIMIT_EXCEEDED = "limit_exceeded"
    RATE_LIMITED = "rate_limited"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.BAD_CALLBACK: 400,
    ErrorCode.UNKNOWN_SOCKET: 401,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.SEQUENCE_GAP: 409,
    ErrorCode.SOCKET_CLOSED: 410,
    ErrorCode.NO_RELAY: 503,
    ErrorCode.UPSTREAM_FAILED: 502,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.DRAINING: 503,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN_ORIGIN: 403,
    ErrorCode.FORBIDDEN_TARGET: 403,
    ErrorCode.BLOCKED_TARGET: 403,
    ErrorCode.LIMIT_EXCEEDED: 429,
    ErrorCode.RATE_LIMITED: 429,
}


class PolysocketError(Exception):
    """An error that is answered to the client as ``{"ok": false, "error": code, "message": ...}``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_dict(self) -> dict[str, object]:
        return {"ok": False, "error": self.code.value, "message": self.message}
