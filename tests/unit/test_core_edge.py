"""The edge both services answer with (pure): JSON/JSONP answers, callbacks, preflight, refusal codes."""

from __future__ import annotations

import orjson
import pytest

from polysocket_core import edge
from polysocket_core.errors import ErrorCode, PolysocketError


@pytest.mark.parametrize("cb", ["cb", "_", "$", "jQuery123_456", "PolySocket._cb.c12", "a.b.c", "x" * 128])
def test_valid_callbacks(cb: str) -> None:
    assert edge.validate_callback(cb) == cb


@pytest.mark.parametrize("cb", [
    "", "1abc", "a..b", "a.", ".a", "alert(1)", "a b", "a;b", "a-b", "a[0]", "a\u2028", "é",
    "x" * 129, "a//", "<script>", "a\nb", "a.1b",
])
def test_invalid_callbacks(cb: str) -> None:
    with pytest.raises(PolysocketError) as err:
        edge.validate_callback(cb)
    assert err.value.code is ErrorCode.BAD_CALLBACK


def test_line_separators_are_escaped() -> None:
    raw = edge.dumps({"d": "a\u2028b\u2029c"})
    assert b"\\u2028" in raw and b"\\u2029" in raw
    assert "\u2028".encode() not in raw


def test_jsonp_render_is_200_script_with_hardening_headers() -> None:
    status, headers, body = edge.render("cb", {"ok": False}, 401)
    assert status == 200
    h = dict(headers)
    assert h[b"content-type"] == b"application/javascript; charset=utf-8"
    assert h[b"x-content-type-options"] == b"nosniff"
    assert h[b"cache-control"] == b"no-store"
    assert h[b"referrer-policy"] == b"no-referrer"
    assert body == b'/**/cb({"ok":false});'


def test_json_render_keeps_status_and_cors() -> None:
    status, headers, body = edge.render(None, {"ok": True}, 201)
    h = dict(headers)
    assert status == 201
    assert h[b"content-type"] == b"application/json"
    assert h[b"access-control-allow-origin"] == b"*"
    assert body == b'{"ok":true}'


def test_error_dict_and_status() -> None:
    err = PolysocketError(ErrorCode.NO_RELAY, "none")
    assert err.status == 503
    assert err.to_dict() == {"ok": False, "error": "no_relay", "message": "none"}


def test_callback_of_params() -> None:
    assert edge.callback({}) is None
    assert edge.callback({"cb": "a.b"}) == "a.b"
    with pytest.raises(PolysocketError) as err:
        edge.callback({"cb": "alert(1)"})
    assert err.value.code is ErrorCode.BAD_CALLBACK


def test_bad_callback_error_is_never_jsonp() -> None:
    status, headers, body = edge.render_error("cb", PolysocketError(ErrorCode.BAD_CALLBACK, "no"))
    assert status == 400 and headers is edge.JSON_HEADERS
    assert not body.startswith(b"/**/")


def test_error_over_jsonp_is_200_script() -> None:
    status, headers, body = edge.render_error("cb", PolysocketError(ErrorCode.NO_RELAY, "none"))
    assert (status, headers) == (200, edge.JS_HEADERS)
    assert body == b'/**/cb({"ok":false,"error":"no_relay","message":"none"});'


def test_preflight_allows_what_both_services_need() -> None:
    h = dict(edge.PREFLIGHT_HEADERS)
    assert h[b"access-control-allow-methods"] == b"GET, POST, OPTIONS"
    assert h[b"access-control-allow-headers"].split(b", ") == [b"content-type", b"last-event-id"]
    assert h[b"x-content-type-options"] == b"nosniff"
    assert b"content-type" not in h  # a 204 has no body


@pytest.mark.parametrize(("status", "code"), [
    (400, ErrorCode.BAD_REQUEST), (404, ErrorCode.NOT_FOUND), (405, ErrorCode.METHOD_NOT_ALLOWED),
    (413, ErrorCode.PAYLOAD_TOO_LARGE), (414, ErrorCode.PAYLOAD_TOO_LARGE), (431, ErrorCode.PAYLOAD_TOO_LARGE),
    (429, ErrorCode.RATE_LIMITED), (418, ErrorCode.BAD_REQUEST), (500, ErrorCode.INTERNAL),
    (503, ErrorCode.INTERNAL),
])
def test_status_to_code(status: int, code: ErrorCode) -> None:
    assert edge.code_for_status(status) is code


def test_refusal_keeps_its_status_and_carries_its_code() -> None:
    status, headers, body = edge.refusal(431, "head too big")
    assert (status, headers) == (431, edge.JSON_HEADERS)
    assert body == b'{"ok":false,"error":"payload_too_large","message":"head too big"}'


def test_closing_refusal_is_one_whole_http1_answer() -> None:
    raw = edge.closing_refusal(414, "url", b"date: x\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == edge.status_line(414).rstrip() and lines[0].startswith(b"HTTP/1.1 414 ")
    assert lines[1] == b"date: x"
    fields = dict(line.split(b": ", 1) for line in lines[1:])
    assert fields[b"connection"] == b"close" and fields[b"access-control-allow-origin"] == b"*"
    assert int(fields[b"content-length"]) == len(body)
    assert orjson.loads(body) == {"ok": False, "error": "payload_too_large", "message": "url"}
