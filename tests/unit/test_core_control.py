"""Control-plane message schema (pure)."""

from __future__ import annotations

import pytest

from polysocket_core.control import NODE_ID_RE, EstablishReply, EstablishRequest, Keys, KillRequest, decode_inbox
from polysocket_core.ids import UNIQ_LENGTH, new_socket_id, new_uniq
from polysocket_core.wire import SOCKET_ID_RE


def test_request_round_trip() -> None:
    req = EstablishRequest(id="r1", socket="s", target="ws://a/", protocols=["x"], expires_at_ms=5,
                           caller="js", meta={"origin": "https://a"}, addresses=["93.184.216.34"], firm_until_ms=3)
    assert decode_inbox(req.encode()) == req
    # A router before ``firm_until_ms``: the node asks before every open whether the router gave up.
    assert decode_inbox(req.encode().replace(b',"firm_until_ms":3', b"")).firm_until_ms == 0  # type: ignore[union-attr]
    assert decode_inbox(KillRequest("tok1").encode()) == KillRequest("tok1", "token revoked")


@pytest.mark.parametrize("raw", [b'{"v":2}', b'{"v":1,"op":"explode"}', b"[]", b"not json", b'{"v":1,"op":"kill"}'])
def test_malformed_inbox_messages_raise(raw: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
        decode_inbox(raw)


def test_reply_round_trip() -> None:
    rep = EstablishReply(phase="done", ok=False, error="upstream_failed", message="refused")
    assert EstablishReply.decode(rep.encode()) == rep


def test_keys() -> None:
    k = Keys("t:")
    assert (k.nodes, k.node("n"), k.alive("n"), k.inbox("n"), k.reply("r")) == (
        "{t:}nodes", "{t:}node:n", "{t:}node:n:alive", "{t:}node:n:inbox", "t:reply:{r}")
    assert k.node_tokens("n") == "{t:}node:n:tokens"
    assert (k.token("ab"), k.tokens) == ("{t:tokens}token:ab", "{t:tokens}ids")
    assert (k.legacy_token("ab"), k.legacy_tokens, k.sweep_absent) == ("t:token:ab", "t:tokens", "{t:}sweep:absent")
    assert k.reservations("tok") == "{t:}resv:tok"
    for bad in ("", "a{b", "a}"):
        with pytest.raises(ValueError):
            Keys(bad)
    assert NODE_ID_RE.fullmatch("node-1.a_b") and not NODE_ID_RE.fullmatch("a b")


def test_ids_are_fresh_and_well_formed() -> None:
    ids = {new_socket_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(SOCKET_ID_RE.fullmatch(i) for i in ids)
    labels = {new_uniq() for _ in range(1000)}
    assert len(labels) == 1000
    assert all(lbl[0].isalpha() and lbl.isalnum() and lbl.islower() and len(lbl) == UNIQ_LENGTH for lbl in labels)


def test_pick_and_report_arguments() -> None:
    from polysocket_core.control import PICK_CHOICES, NodeReport, pick_args

    k = Keys()
    keys, args = pick_args(k, "tok", 5, b"{}", list(range(PICK_CHOICES)), ["n1"])
    assert keys == [*k.fleet, "{ps:}resv:tok"] and args[:4] == ["{ps:}", "tok", 5, b"{}"] and args[-1] == "n1"
    with pytest.raises(ValueError):
        pick_args(k, "", 0, b"{}", [1] * (PICK_CHOICES + 1), [])
    report = NodeReport("n", "beat", 1000, counts={"a": 2}, settle=[("a", "r1")]).args(k)
    assert report[9:] == [1, "a", 2, "a", "r1"]  # how many counts, the counts, then the settled requests
