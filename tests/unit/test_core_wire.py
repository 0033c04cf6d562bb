"""Parameter parsing of the wire protocol (pure)."""

from __future__ import annotations

import base64
import json

import pytest

from polysocket_core import wire
from polysocket_core.errors import ErrorCode, PolysocketError

SID = "A" * 32


def code_of(fn: object, *args: object) -> ErrorCode:
    with pytest.raises(PolysocketError) as err:
        fn(*args)  # type: ignore[operator]
    return err.value.code


@pytest.mark.parametrize("target", ["ws://example.com/", "wss://example.com:8443/path?q=1", "ws://[::1]:80/",
                                    "ws://127.0.0.1:9/x"])
def test_good_targets(target: str) -> None:
    assert wire.parse_target(target) == target


@pytest.mark.parametrize("target", [
    "http://example.com/", "example.com", "ws://", "ws:///path", "ws://user:pw@example.com/",
    "ws://example.com/#frag", "ws://example.com:99999/", "ws://example.com:0/", "ws://exa mple.com/",
    "ws://example.com/\n", "javascript:alert(1)", "ws://example.com:abc/", "w" * 3000,
])
def test_bad_targets(target: str) -> None:
    assert code_of(wire.parse_target, target) is ErrorCode.BAD_REQUEST


def test_connect_requires_from_and_target() -> None:
    assert code_of(wire.parse_connect, {"target": "ws://a/"}) is ErrorCode.BAD_REQUEST
    assert code_of(wire.parse_connect, {"from": "x"}) is ErrorCode.BAD_REQUEST
    p = wire.parse_connect({"from": "js", "target": "ws://a/", "protocols": "chat, v2.json"})
    assert p.protocols == ["chat", "v2.json"] and p.token is None


@pytest.mark.parametrize("protocols", ["a b", "a,,b", "a,a", ",".join(f"p{i}" for i in range(17)), "a;b"])
def test_bad_protocols(protocols: str) -> None:
    assert code_of(wire.parse_protocols, protocols) is ErrorCode.BAD_REQUEST


def test_send_parsing() -> None:
    p = wire.parse_send({"socket": SID, "seq": "3", "d": "héllo"})
    assert (p.seq, p.kind, p.fin, p.data) == (3, "t", True, "héllo".encode())
    p = wire.parse_send({"socket": SID, "seq": "0", "t": "b", "d": "AAEC", "fin": "0"})
    assert (p.kind, p.fin, p.data) == ("b", False, b"\x00\x01\x02")
    assert wire.parse_send({"socket": SID, "seq": "0", "d": ""}).data == b""


@pytest.mark.parametrize("params", [
    {"socket": SID, "d": "x"},                       # no seq
    {"socket": SID, "seq": "-1", "d": "x"},
    {"socket": SID, "seq": "1.5", "d": "x"},
    {"socket": SID, "seq": "9007199254740992", "d": "x"},
    {"socket": SID, "seq": "٣", "d": "x"},            # non-ASCII digit
    {"socket": SID, "seq": "0"},                     # no d
    {"socket": SID, "seq": "0", "d": "x", "t": "z"},
    {"socket": SID, "seq": "0", "d": "x", "fin": "2"},
    {"socket": SID, "seq": "0", "d": "!!!", "t": "b"},
    {"socket": SID, "seq": "0", "d": "\udc80"},     # lone surrogate
])
def test_bad_sends(params: dict[str, str]) -> None:
    assert code_of(wire.parse_send, params) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("sid", ["", "short", "A" * 65, "A" * 31 + "/", "../../etc/passwd" + "A" * 20])
def test_bad_socket_ids_are_unknown(sid: str) -> None:
    if sid == "":
        assert code_of(wire.parse_send, {"socket": sid, "seq": "0", "d": ""}) is ErrorCode.BAD_REQUEST
    else:
        assert code_of(wire.parse_poll, {"socket": sid}) is ErrorCode.UNKNOWN_SOCKET


def test_post_body_invalid_utf8() -> None:
    assert code_of(wire.parse_send, {"socket": SID, "seq": "0"}, b"\xff\xfe") is ErrorCode.BAD_REQUEST
    p = wire.parse_send({"socket": SID, "seq": "0", "t": "b"}, b"\xff\xfe", True)
    assert p.data == b"\xff\xfe"


def test_poll_defaults_and_cap() -> None:
    p = wire.parse_poll({"socket": SID})
    assert (p.ttl_ms, p.ack) == (wire.DEFAULT_POLL_TTL_MS, -1)
    assert wire.parse_poll({"socket": SID, "ttl": "999999999", "ack": "5"}, 1000).ttl_ms == 1000
    assert code_of(wire.parse_poll, {"socket": SID, "ack": "-2"}) is ErrorCode.BAD_REQUEST
    assert code_of(wire.parse_poll, {"socket": SID, "ttl": "x"}) is ErrorCode.BAD_REQUEST


def test_close_validation() -> None:
    # no code: a close frame without a status (what close() with no arguments sends)
    assert wire.parse_close({"socket": SID}).code == wire.CLOSE_NO_STATUS == 1005
    assert wire.parse_close({"socket": SID, "code": ""}).code == 1005
    assert code_of(wire.parse_close, {"socket": SID, "reason": "r"}) is ErrorCode.BAD_REQUEST
    assert wire.parse_close({"socket": SID, "code": "4000", "reason": "r"}).reason == "r"
    assert wire.parse_close({"socket": SID, "code": "1001"}).code == 1001
    for code in ("999", "1002", "1005", "1006", "2999", "5000"):
        assert code_of(wire.parse_close, {"socket": SID, "code": code}) is ErrorCode.BAD_REQUEST
    assert code_of(wire.parse_close, {"socket": SID, "reason": "é" * 62}) is ErrorCode.BAD_REQUEST


def test_parse_query_is_strict() -> None:
    assert wire.parse_query(b"a=1&b=%C3%A9&c=") == {"a": "1", "b": "é", "c": ""}
    assert code_of(wire.parse_query, b"d=%ff") is ErrorCode.BAD_REQUEST
    assert code_of(wire.parse_query, "d=é".encode()) is ErrorCode.BAD_REQUEST
    assert code_of(wire.parse_query, b"&".join(b"a%d=1" % i for i in range(40))) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("text", ["", "hello", 'quote " and \\\\ backslash', "\u2028\u2029", "😀 \x00 \n", "é" * 100])
def test_message_fragments_are_script_safe_json(text: str) -> None:
    frag = wire.text_fragment(7, text)
    assert json.loads(frag) == {"seq": 7, "type": "text", "data": text}
    assert "\u2028".encode() not in frag and "\u2029".encode() not in frag
    assert json.loads(wire.binary_fragment(8, text.encode())) == {
        "seq": 8, "type": "binary", "data": base64.b64encode(text.encode()).decode()}
    assert json.loads(wire.close_fragment(9, 4000, text)) == {"seq": 9, "type": "close", "code": 4000, "reason": text}


def test_parse_query_matches_parse_qsl_on_random_input() -> None:
    """The hand-rolled parser gives parse_qsl's result (or its failure) on arbitrary query strings."""
    import random
    from urllib.parse import parse_qsl

    rng = random.Random(1234)
    alphabet = ["a", "b", "=", "&", "+", "%", "%2", "%41", "%C3%A9", "%ff", "%zz", " ", "x=", "==", "%E2%80%A8"]
    for _ in range(5000):
        qs = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        try:
            expected: dict[str, str] | None = dict(parse_qsl(qs, keep_blank_values=True, errors="strict",
                                                              max_num_fields=wire.MAX_QUERY_FIELDS))
        except (UnicodeDecodeError, ValueError):
            expected = None
        try:
            got: dict[str, str] | None = wire.parse_query(qs.encode())
        except PolysocketError:
            got = None
        assert got == expected, qs
