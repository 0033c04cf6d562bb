"""Public-address discovery. The EC2 instance metadata service and the ECS task metadata endpoint
cannot run here: ``imds_standin`` imitates them on 127.0.0.1 (IMDSv2 token rules included). The
ENI lookup of the ECS path runs against LocalStack's EC2."""

from __future__ import annotations

from typing import Any

import pytest

from relay_node.control.aws.discovery import DiscoveryError, discover_public_ip, imds_get
from relay_node.control.aws.node import NodeCloud
from relay_node.control.aws.settings import CloudSettings
from tests.support.imds_standin import metadata_standin

from .conftest import a_records

pytestmark = pytest.mark.cloud


def test_imdsv2_public_ip() -> None:
    with metadata_standin({"public-ipv4": "203.0.113.25", "instance-id": "i-0abc"}) as imds:
        assert discover_public_ip(imds_url=imds.url, ecs_metadata_uri="") == "203.0.113.25"
        assert imds_get("instance-id", imds_url=imds.url) == "i-0abc"
        # token first, then the read with that token: never an IMDSv1 (tokenless) read
        assert [(m, p, ok) for m, p, ok in imds.requests][:2] == [
            ("PUT", "/latest/api/token", False), ("GET", "/latest/meta-data/public-ipv4", True)]
        assert all(ok for m, _, ok in imds.requests if m == "GET")


def test_imds_without_public_address_or_unreachable() -> None:
    with metadata_standin({"instance-id": "i-0abc"}) as imds:  # a subnet without public IPs: 404
        with pytest.raises(DiscoveryError, match="HTTP 404"):
            discover_public_ip(imds_url=imds.url, ecs_metadata_uri="")
        url = imds.url
    with pytest.raises(DiscoveryError, match="unreachable"):  # the stand-in is gone: connection refused
        discover_public_ip(imds_url=url, ecs_metadata_uri="", timeout_s=0.5)
    with metadata_standin({"public-ipv4": "<html>x</html>"}) as imds, pytest.raises(DiscoveryError, match="IPv4"):
        discover_public_ip(imds_url=imds.url, ecs_metadata_uri="")


async def test_node_start_discovers_its_address(route53: Any, zone: tuple[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4", raising=False)  # in case CI itself runs on ECS
    zone_id, domain = zone
    name = f"i-0def.relay.{domain}"
    with metadata_standin({"public-ipv4": "203.0.113.99"}) as imds:
        node = NodeCloud(CloudSettings(zone_id=zone_id, imds_url=imds.url, insync_poll_s=0.05), name,
                         lambda: (0, 1), route53=route53)
        await node.start()
    assert a_records(route53, zone_id) == {name: (60, ["203.0.113.99"]), f"*.{name}": (60, ["203.0.113.99"])}
    await node.stop()
    assert a_records(route53, zone_id) == {}


def test_ecs_task_public_ip(ec2: Any) -> None:
    """Fargate (awsvpc): task metadata gives the private address, EC2 the ENI's public association."""
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    eni = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="10.42.1.17")["NetworkInterface"]
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], NetworkInterfaceId=eni["NetworkInterfaceId"])
    task: dict[str, Any] = {"TaskARN": "arn:aws:ecs:us-east-1:000000000000:task/relays/0123456789abcdef",
            "Containers": [{"Name": "relay", "Networks": [{"NetworkMode": "awsvpc",
                                                           "IPv4Addresses": ["10.42.1.17"]}]}]}
    with metadata_standin({}, ecs_task=task) as meta:
        ip = discover_public_ip(ecs_metadata_uri=f"{meta.url}/ecs", imds_url="http://127.0.0.1:9", ec2_client=ec2)
    assert ip == eip["PublicIp"]

    task["Containers"][0]["Networks"][0]["IPv4Addresses"] = ["10.42.1.200"]  # no interface holds it
    with metadata_standin({}, ecs_task=task) as meta, pytest.raises(DiscoveryError, match="no public IP"):
        discover_public_ip(ecs_metadata_uri=f"{meta.url}/ecs", imds_url="http://127.0.0.1:9", ec2_client=ec2)
