"""Control-plane message schema (pure)."""

from __future__ import annotations

import pytest

from polysocket_core.control import NODE_ID_RE, EstablishReply, EstablishRequest, Keys
from polysocket_core.ids import new_socket_id, new_uniq
from polysocket_core.wire import SOCKET_ID_RE


def test_request_round_trip() -> None:
    req = EstablishRequest(id="r1", socket="s", target="ws://a/", protocols=["x"], expires_at_ms=5,
                           caller="js", meta={"origin": "https://a"})
    assert EstablishRequest.decode(req.encode()) == req


def test_request_version_checked() -> None:
    with pytest.raises(ValueError):
        EstablishRequest.decode(b'{"v":2}')


def test_reply_round_trip() -> None:
    rep = EstablishReply(phase="done", ok=False, error="upstream_failed", message="refused")
    assert EstablishReply.decode(rep.encode()) == rep


def test_keys() -> None:
    k = Keys("t:")
    assert (k.nodes, k.node("n"), k.alive("n"), k.inbox("n"), k.reply("r")) == (
        "t:nodes", "t:node:n", "t:node:n:alive", "t:node:n:inbox", "t:reply:r")
    assert NODE_ID_RE.fullmatch("node-1.a_b") and not NODE_ID_RE.fullmatch("a b")


def test_ids_are_fresh_and_well_formed() -> None:
    ids = {new_socket_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(SOCKET_ID_RE.fullmatch(i) for i in ids)
    labels = {new_uniq() for _ in range(1000)}
    assert len(labels) == 1000
    assert all(lbl[0].isalpha() and lbl.isalnum() and lbl.islower() and len(lbl) == 12 for lbl in labels)
