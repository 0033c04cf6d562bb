"""JSONP encoding and callback validation (pure)."""

from __future__ import annotations

import pytest

from polysocket_core import jsonp
from polysocket_core.errors import ErrorCode, PolysocketError


@pytest.mark.parametrize("cb", ["cb", "_", "$", "jQuery123_456", "PolySocket._cb.c12", "a.b.c", "x" * 128])
def test_valid_callbacks(cb: str) -> None:
    assert jsonp.validate_callback(cb) == cb


@pytest.mark.parametrize("cb", [
    "", "1abc", "a..b", "a.", ".a", "alert(1)", "a b", "a;b", "a-b", "a[0]", "a\u2028", "é",
    "x" * 129, "a//", "<script>", "a\nb", "a.1b",
])
def test_invalid_callbacks(cb: str) -> None:
    with pytest.raises(PolysocketError) as err:
        jsonp.validate_callback(cb)
    assert err.value.code is ErrorCode.BAD_CALLBACK


def test_line_separators_are_escaped() -> None:
    raw = jsonp.dumps({"d": "a\u2028b\u2029c"})
    assert b"\\u2028" in raw and b"\\u2029" in raw
    assert "\u2028".encode() not in raw


def test_jsonp_render_is_200_script_with_hardening_headers() -> None:
    status, headers, body = jsonp.render("cb", {"ok": False}, 401)
    assert status == 200
    h = dict(headers)
    assert h[b"content-type"] == b"application/javascript; charset=utf-8"
    assert h[b"x-content-type-options"] == b"nosniff"
    assert h[b"cache-control"] == b"no-store"
    assert h[b"referrer-policy"] == b"no-referrer"
    assert body == b'/**/cb({"ok":false});'


def test_json_render_keeps_status_and_cors() -> None:
    status, headers, body = jsonp.render(None, {"ok": True}, 201)
    h = dict(headers)
    assert status == 201
    assert h[b"content-type"] == b"application/json"
    assert h[b"access-control-allow-origin"] == b"*"
    assert body == b'{"ok":true}'


def test_error_dict_and_status() -> None:
    err = PolysocketError(ErrorCode.NO_RELAY, "none")
    assert err.status == 503
    assert err.to_dict() == {"ok": False, "error": "no_relay", "message": "none"}
