"""The pure-Python key slot used by the one-slot tests agrees with Redis Cluster's specification."""

from __future__ import annotations

from polysocket_core.control import Keys
from tests.support.slots import crc16, key_slot


def test_crc16_and_slots_match_the_cluster_spec() -> None:
    assert crc16(b"123456789") == 0x31C3  # the check value in the Redis Cluster specification
    assert key_slot(b"foo") == 12182 and key_slot(b"somekey") == 11058
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers") == key_slot(b"user1000")
    assert key_slot(b"foo{}{bar}") == crc16(b"foo{}{bar}") % 16384  # an empty tag is no tag


def test_fleet_keys_share_a_slot_and_per_request_keys_spread() -> None:
    k = Keys()
    fleet = [*k.fleet, k.node("n1"), k.alive("n2"), k.inbox("n3"), k.node_tokens("n4"), k.reservations("tok")]
    assert len({key_slot(key.encode()) for key in fleet}) == 1
    spread = {key_slot(k.reply(f"r{i}").encode()) for i in range(20)}
    assert len(spread) > 10
    # the relay's answer and the router's "gave up" marker go in one script: one slot
    assert all(key_slot(k.reply(f"r{i}").encode()) == key_slot(k.abandoned(f"r{i}").encode()) for i in range(20))
