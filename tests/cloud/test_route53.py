"""A relay's own records: UPSERT ``{name}`` and ``*.{name}`` at start (INSYNC awaited), DELETE at stop."""

from __future__ import annotations

from typing import Any

import pytest

from relay_node.control.aws.node import NodeCloud
from relay_node.control.aws.route53 import delete_node_records, node_record_names
from relay_node.control.aws.settings import CloudSettings

from .conftest import a_records

pytestmark = pytest.mark.cloud


class PendingFirst:
    """The real LocalStack client, except that the first ``pending`` GetChange answers say PENDING.

    LocalStack reports every change INSYNC at once (real Route 53 takes seconds), so without this the
    test could not tell a start() that waits from one that does not.
    """

    def __init__(self, client: Any, pending: int) -> None:
        self._client = client
        self.pending = pending
        self.get_change_calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_change(self, Id: str) -> Any:  # boto3 names it Id
        answer = self._client.get_change(Id=Id)
        self.get_change_calls.append(answer["ChangeInfo"]["Status"])
        if len(self.get_change_calls) <= self.pending:
            answer["ChangeInfo"]["Status"] = "PENDING"
        return answer


def test_node_record_names() -> None:
    assert node_record_names("n1.relay.test:8443") == ("n1.relay.test", "*.n1.relay.test")
    assert node_record_names("N1.Relay.Test.") == ("n1.relay.test", "*.n1.relay.test")
    with pytest.raises(ValueError):
        node_record_names("*.n1.relay.test")


async def test_start_registers_and_waits_insync_stop_deletes(route53: Any, zone: tuple[str, str]) -> None:
    zone_id, domain = zone
    name = f"i-0abc.relay.{domain}"
    other = {f"keep.{domain}": (300, ["198.51.100.1"])}
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {"Name": f"keep.{domain}", "Type": "A", "TTL": 300,
                                                   "ResourceRecords": [{"Value": "198.51.100.1"}]}}]})
    client = PendingFirst(route53, pending=2)
    settings = CloudSettings(zone_id=zone_id, public_ip="203.0.113.7", record_ttl_s=30, insync_poll_s=0.05)
    node = NodeCloud(settings, f"{name}:8443", lambda: (0, 10), route53=client)

    await node.start()
    assert client.get_change_calls == ["INSYNC", "INSYNC", "INSYNC"]  # polled until not PENDING
    assert a_records(route53, zone_id) == {name: (30, ["203.0.113.7"]), f"*.{name}": (30, ["203.0.113.7"]), **other}
    assert node.publisher is None  # no namespace: no metric task

    await node.stop()
    assert a_records(route53, zone_id) == other
    await node.stop()  # idempotent


async def test_upsert_replaces_a_previous_life(route53: Any, zone: tuple[str, str]) -> None:
    """A node restarting on a new address (records left by its previous run) overwrites them."""
    zone_id, domain = zone
    name = f"n1.{domain}"
    for ip in ("192.0.2.1", "192.0.2.2"):
        node = NodeCloud(CloudSettings(zone_id=zone_id, public_ip=ip, insync_poll_s=0.05), name, lambda: (0, 1),
                         route53=route53)
        await node.start()
        assert a_records(route53, zone_id) == {name: (60, [ip]), f"*.{name}": (60, [ip])}
    await node.stop()
    assert a_records(route53, zone_id) == {}


async def test_insync_timeout_fails_start_but_stop_still_deletes(route53: Any, zone: tuple[str, str]) -> None:
    zone_id, domain = zone
    name = f"slow.{domain}"
    client = PendingFirst(route53, pending=10**6)
    node = NodeCloud(CloudSettings(zone_id=zone_id, public_ip="192.0.2.9", insync_timeout_s=0.3, insync_poll_s=0.05),
                     name, lambda: (0, 1), route53=client)
    with pytest.raises(TimeoutError, match="PENDING"):
        await node.start()
    assert name in a_records(route53, zone_id)
    await node.stop()
    assert a_records(route53, zone_id) == {}


def test_delete_of_records_already_gone_is_not_an_error(route53: Any, zone: tuple[str, str]) -> None:
    zone_id, domain = zone
    assert delete_node_records(route53, zone_id, f"gone.{domain}") is False
