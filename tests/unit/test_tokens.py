"""A token record read back by the connect path's ``HMGET`` (router_fn.tokens) is the record written."""

from __future__ import annotations

from router_fn.tokens import RECORD_FIELDS, TokenRecord, TokenStore

RECORD = TokenRecord(id="abc123def456", origins=["https://a.test"], targets=["wss://t.test/*"], max_sockets=7,
                     label="site", created_at=1_700_000_000, expires_at=1_800_000_000, revoked=True)


def test_the_lookup_asks_for_every_field_a_record_is_written_with() -> None:
    assert tuple(RECORD.to_redis()) == RECORD_FIELDS
    assert RECORD_FIELDS[0] == "id"  # record_of takes a missing id for a missing token


def test_a_record_comes_back_from_its_fields_in_order() -> None:
    values = [v.encode() for v in RECORD.to_redis().values()]
    assert TokenStore.record_of(values) == RECORD


def test_no_record_for_a_token_that_is_not_there() -> None:
    assert TokenStore.record_of([None] * len(RECORD_FIELDS)) is None
    # a record written before a field existed still reads, with that field's default
    older = [v.encode() if k != "label" else None for k, v in RECORD.to_redis().items()]
    record = TokenStore.record_of(older)
    assert record is not None and record.label == ""
