"""The node's token ledger: one object per reservation, absolute counts, settlement (no servers)."""

from __future__ import annotations

import orjson

from polysocket_core.control import EstablishRequest
from polysocket_core.reservations import TokenLedger


def test_counts_follow_reservations_and_never_go_negative() -> None:
    ledger = TokenLedger()
    a = ledger.take("r1", "tok")
    b = ledger.take("r2", "tok")
    c = ledger.take("r3", "other")
    assert ledger.counts() == {"tok": 2, "other": 1}
    a.release()
    a.release()  # idempotent: a socket freed twice gives back one reservation
    assert ledger.counts() == {"tok": 1, "other": 1}
    b.release()
    c.release()
    assert ledger.counts() == {} and ledger.count("tok") == 0


def test_no_token_is_not_counted() -> None:
    ledger = TokenLedger()
    r = ledger.take("r1", "")
    assert ledger.counts() == {} and ledger.begin_settle() == []
    r.release()
    assert ledger.counts() == {}


def test_settlement_lists_each_taken_request_once_and_survives_a_failed_beat() -> None:
    ledger = TokenLedger()
    ledger.take("r1", "tok")
    r2 = ledger.take("r2", "tok")
    r2.release()  # released before any beat: still settled (removed from the router's set)
    batch = ledger.begin_settle()
    assert batch == [("tok", "r1"), ("tok", "r2")]
    ledger.take("r3", "tok")
    ledger.settle_failed(batch)  # Redis did not answer: settle with the next beat, in order
    assert ledger.begin_settle() == [("tok", "r1"), ("tok", "r2"), ("tok", "r3")]
    assert ledger.begin_settle() == []


def test_token_id_is_a_typed_field_of_the_request() -> None:
    req = EstablishRequest(id="q", socket="s" * 32, target="ws://a/", protocols=[], expires_at_ms=1,
                           token_id="tok", meta={"origin": "https://a"})
    assert EstablishRequest.from_dict(orjson.loads(req.encode())).token_id == "tok"
    # A request from a router that only put the token in ``meta`` still counts against it.
    old = {"id": "q", "socket": "s" * 32, "target": "ws://a/", "expires_at_ms": 1, "meta": {"token": "tok"}}
    assert EstablishRequest.from_dict(old).token_id == "tok"
