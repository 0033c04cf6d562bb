"""The browser-facing wire protocol: request parameters and message shapes (see docs/protocol.md).

Parsing here turns untrusted query parameters into typed values or a typed ``PolysocketError``;
the HTTP layers only move bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import orjson

from .edge import dumps
from .errors import ErrorCode, PolysocketError

FrameType = Literal["t", "b"]

SOCKET_ID_RE = re.compile(r"[A-Za-z0-9_-]{22,64}")
MAX_SEQ = 2**53 - 1  # what a JavaScript number counts exactly
MAX_TARGET_LENGTH = 2048
MAX_FROM_LENGTH = 128
MAX_PROTOCOLS = 16
_TOKEN_CHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 token, what a subprotocol may be

DEFAULT_POLL_TTL_MS = 25_000
MAX_POLL_TTL_MS = 55_000  # under API Gateway's / proxies' common 60 s idle cut
# A stream's heartbeat interval is raised to this: a 1 ms one would cost a timer callback per
# millisecond per stream, and queue ~1 MB of heartbeats in 120 s for a client that does not read.
MIN_STREAM_TTL_MS = 1_000

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005  # a close frame without a status code (a /close without ``code``)
CLOSE_ABNORMAL = 1006
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011


def bad(message: str) -> PolysocketError:
    return PolysocketError(ErrorCode.BAD_REQUEST, message)


MAX_QUERY_FIELDS = 16


def parse_query(raw: bytes) -> dict[str, str]:  # perf: lean-query-parse
    """Decode a raw query string strictly: ASCII on the wire, percent-escapes must be valid UTF-8.

    The result of ``dict(parse_qsl(qs, keep_blank_values=True, errors="strict"))`` (last value of a
    repeated name wins), without its generality: it runs for every request on the relay's hot path.
    """
    try:
        qs = raw.decode("ascii")
    except UnicodeDecodeError:
        raise bad("query string is not valid percent-encoded UTF-8") from None
    if qs.count("&") >= MAX_QUERY_FIELDS:
        raise bad(f"malformed query string: more than {MAX_QUERY_FIELDS} fields")
    params: dict[str, str] = {}
    for item in qs.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        if "%" in item or "+" in item:
            try:
                name = unquote(name.replace("+", " "), errors="strict")
                value = unquote(value.replace("+", " "), errors="strict")
            except UnicodeDecodeError:
                raise bad("query string is not valid percent-encoded UTF-8") from None
        params[name] = value
    return params


def require(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise bad(f"missing parameter: {name}")
    return value


def parse_int(params: dict[str, str], name: str, default: int | None, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise bad(f"missing parameter: {name}")
        return default
    if not raw.isascii() or not (raw.isdigit() or (raw[0] == "-" and raw[1:].isdigit())) or len(raw) > 20:
        raise bad(f"{name} must be an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise bad(f"{name} must be between {lo} and {hi}")
    return value


def parse_socket_id(params: dict[str, str]) -> str:
    sid = require(params, "socket")
    if SOCKET_ID_RE.fullmatch(sid) is None:
        raise PolysocketError(ErrorCode.UNKNOWN_SOCKET, "socket id is malformed")
    return sid


def parse_target(raw: str) -> str:
    """Accept only absolute ws:// or wss:// URLs with a host and no credentials or fragment."""
    if len(raw) > MAX_TARGET_LENGTH:
        raise bad(f"target is longer than {MAX_TARGET_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw):
        raise bad("target contains whitespace or control characters")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise bad(f"target is not a valid URL: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise bad("target must be a ws:// or wss:// URL")
    if not parts.hostname:
        raise bad("target has no host")
    if parts.username is not None or parts.password is not None:
        raise bad("target must not carry credentials")
    if parts.fragment:
        raise bad("target must not have a #fragment")
    if port == 0:
        raise bad("target port must be 1-65535")
    return raw


def parse_protocols(raw: str | None) -> list[str]:
    if not raw:
        return []
    items = [p.strip() for p in raw.split(",")]
    if len(items) > MAX_PROTOCOLS:
        raise bad(f"at most {MAX_PROTOCOLS} subprotocols")
    seen: set[str] = set()
    for item in items:
        if _TOKEN_CHARS.fullmatch(item) is None:
            raise bad(f"invalid subprotocol name: {item!r}")
        if item in seen:
            raise bad(f"duplicate subprotocol: {item!r}")
        seen.add(item)
    return items


@dataclass(frozen=True, slots=True)
class ConnectParams:
    target: str
    caller: str
    token: str | None
    protocols: list[str]


def parse_connect(params: dict[str, str]) -> ConnectParams:
    target = parse_target(require(params, "target"))
    caller = require(params, "from")
    if len(caller) > MAX_FROM_LENGTH or not caller.isprintable():
        raise bad(f"from must be printable and at most {MAX_FROM_LENGTH} characters")
    return ConnectParams(
        target=target,
        caller=caller,
        token=params.get("token") or None,
        protocols=parse_protocols(params.get("protocols")),
    )


class SendParams(NamedTuple):  # perf: sendparams-namedtuple
    """One send, as parsed (immutable). A named tuple, not a frozen dataclass: it is built for
    every message, and a frozen dataclass's ``__init__`` costs a third of ``parse_send``."""

    socket: str
    seq: int
    kind: FrameType
    fin: bool
    data: bytes  # decoded payload bytes (UTF-8 for text)
    ack: int = -1  # highest message seq the client processed, applied before the frame; -1 for none


def decode_payload(kind: str, data: str | bytes, raw_binary: bool = False) -> bytes:
    """Turn the ``d`` value into frame bytes: UTF-8 for text, base64-decoded for binary."""
    if kind == "t":
        if isinstance(data, bytes):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise bad("text data is not valid UTF-8") from None
            return data
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError:
            raise bad("text data is not valid UTF-8 (lone surrogate)") from None
    if raw_binary and isinstance(data, bytes):
        return data
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad("binary data must be standard base64") from None


def parse_send(params: dict[str, str], body: bytes | None = None, raw_binary: bool = False) -> SendParams:
    sid = parse_socket_id(params)
    kind = params.get("t", "t")
    if kind not in ("t", "b"):
        raise bad("t must be 't' (text) or 'b' (base64 binary)")
    seq = parse_int(params, "seq", None, 0, MAX_SEQ)
    fin_raw = params.get("fin", "1")
    if fin_raw not in ("0", "1"):
        raise bad("fin must be 0 or 1")
    if body is not None:
        data = decode_payload(kind, body, raw_binary)
    else:
        if "d" not in params:
            raise bad("missing parameter: d")
        data = decode_payload(kind, params["d"])
    return SendParams(socket=sid, seq=seq, kind=kind, fin=fin_raw == "1", data=data,  # type: ignore[arg-type]
                      ack=parse_ack(params))


MAX_BATCH_FRAMES = 1024  # the relay holds at most 1024 seqs ahead of a missing one


def parse_send_batch(params: dict[str, str], body: bytes | None = None) -> list[SendParams]:
    """Frames sent together (``batch``): ``[[seq, "t"|"b", fin, data], ...]`` as JSON, in the
    request body (POST) or as the value of ``batch`` (GET). Each frame is what one single-frame
    send would carry; ``data`` is text, or base64 for ``"b"``."""
    sid = parse_socket_id(params)
    ack = parse_ack(params)
    raw: bytes | str = body if body is not None else params.get("batch", "")
    try:
        items: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad("batch is not valid JSON") from None
    if not isinstance(items, list) or not items:
        raise bad("batch must be a non-empty JSON array of frames")
    if len(items) > MAX_BATCH_FRAMES:
        raise bad(f"at most {MAX_BATCH_FRAMES} frames in a batch")
    frames: list[SendParams] = []
    for item in items:
        if not isinstance(item, list) or len(item) != 4:
            raise bad("a batch frame is [seq, type, fin, data]")
        seq, kind, fin, data = item
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise bad(f"batch frame seq must be an integer between 0 and {MAX_SEQ}")
        if kind not in ("t", "b"):
            raise bad("batch frame type must be 't' (text) or 'b' (base64 binary)")
        if type(fin) is not int or fin not in (0, 1):
            raise bad("batch frame fin must be 0 or 1")
        if not isinstance(data, str):
            raise bad("batch frame data must be a string")
        frames.append(SendParams(socket=sid, seq=seq, kind=kind, fin=fin == 1, data=decode_payload(kind, data),
                                 ack=ack))
    return frames


@dataclass(frozen=True, slots=True)
class PollParams:
    socket: str
    ttl_ms: int
    ack: int  # highest message seq the client processed; -1 for none


def parse_ack(params: dict[str, str]) -> int:
    """``ack``: the highest message seq the client processed (on /poll, /stream and /send); -1 for none."""
    return parse_int(params, "ack", -1, -1, MAX_SEQ)


def parse_poll(params: dict[str, str], max_ttl_ms: int = MAX_POLL_TTL_MS) -> PollParams:
    sid = parse_socket_id(params)
    ttl = parse_int(params, "ttl", DEFAULT_POLL_TTL_MS, 0, 10**9)
    return PollParams(socket=sid, ttl_ms=min(ttl, max_ttl_ms), ack=parse_ack(params))


@dataclass(frozen=True, slots=True)
class StreamParams:
    socket: str
    ack: int  # ``ack``; -1 for none
    ttl_ms: int  # heartbeat interval
    pad: bool  # open with the 2 KiB prelude old IE's XHR / XDomainRequest needs
    last_event_id: int = -1  # a valid ``Last-Event-ID``: acks like ``ack``, ignored above the last seq queued


def parse_last_event_id(raw: bytes | None) -> int:
    """The ``Last-Event-ID`` header EventSource sends when it reconnects; -1 unless a valid seq.
    An invalid one is ignored, not refused: the client cannot choose what EventSource sends."""
    if raw is None or not raw.isdigit() or len(raw) > 16:
        return -1
    value = int(raw)
    return value if value <= MAX_SEQ else -1


def parse_stream(params: dict[str, str], max_ttl_ms: int = MAX_POLL_TTL_MS,
                 last_event_id: bytes | None = None) -> StreamParams:
    """``GET /stream``: ``cb`` is refused (a stream is text/event-stream, JSONP clients poll); a
    ``ttl`` of 0 is refused (it is the heartbeat interval, not a wait); below ``MIN_STREAM_TTL_MS``
    it is raised to it, above ``max_ttl_ms`` lowered to that (the floor wins if it is the greater)."""
    if "cb" in params:
        raise bad("/stream answers text/event-stream; use /poll for JSONP")
    sid = parse_socket_id(params)
    ttl = parse_int(params, "ttl", DEFAULT_POLL_TTL_MS, 1, 10**9)
    pad = params.get("pad", "0")
    if pad not in ("0", "1", ""):
        raise bad("pad must be 0 or 1")
    return StreamParams(socket=sid, ack=parse_ack(params), ttl_ms=heartbeat_interval_ms(ttl, max_ttl_ms),
                        pad=pad == "1", last_event_id=parse_last_event_id(last_event_id))


def heartbeat_interval_ms(ttl_ms: int, max_ttl_ms: int) -> int:
    """A stream's heartbeat interval: its ``ttl`` lowered to the relay's cap, then raised to the
    floor, which is applied last so that no cap (not even ``--max-poll-ttl 0``) can make a stream
    heartbeat in a busy loop."""
    return max(min(ttl_ms, max_ttl_ms), MIN_STREAM_TTL_MS)


@dataclass(frozen=True, slots=True)
class CloseParams:
    socket: str
    code: int
    reason: str


def parse_close(params: dict[str, str]) -> CloseParams:
    """``code`` absent (or empty): a close frame without a status code, as ``close()`` sends it;
    ``CLOSE_NO_STATUS`` stands for it, and then no ``reason`` may be given either."""
    sid = parse_socket_id(params)
    code = parse_int(params, "code", CLOSE_NO_STATUS, 0, 4999)
    # 1000 or an application code, as close() allows; plus 1001 "going away", which a native
    # browser sends itself when the page is left and the client library reports the same way.
    if code not in (CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_NO_STATUS) and not 3000 <= code <= 4999:
        raise bad("code must be 1000, 1001 or in 3000-4999")
    if code == CLOSE_NO_STATUS and params.get("code"):
        raise bad("code must be 1000, 1001 or in 3000-4999")
    reason = params.get("reason", "")
    if code == CLOSE_NO_STATUS and reason:
        raise bad("a reason needs a code")
    if len(reason.encode("utf-8", "surrogatepass")) > 123:
        raise bad("reason must be at most 123 UTF-8 bytes")
    return CloseParams(socket=sid, code=code, reason=reason)


# Server -> client messages, each carrying ``seq`` (heartbeats, which carry none, are in
# sequencing.HEARTBEAT_ANSWER). The relay encodes every message once, straight to its JSON fragment;
# a poll answer is the concatenation of fragments.


def text_fragment(seq: int, data: str) -> bytes:  # perf: direct-fragments
    return b'{"seq":%d,"type":"text","data":%b}' % (seq, dumps(data))


def binary_fragment(seq: int, data: bytes) -> bytes:
    return b'{"seq":%d,"type":"binary","data":"%b"}' % (seq, base64.b64encode(data))


def close_fragment(seq: int, code: int, reason: str) -> bytes:
    return dumps({"seq": seq, "type": "close", "code": code, "reason": reason})
