"""The node's public IPv4 address, from the platform it runs on.

* **ECS (Fargate, awsvpc)**: when ``ECS_CONTAINER_METADATA_URI_V4`` is set, the task metadata gives
  the task's private address; the public address is the association of the network interface that
  carries it (``ec2:DescribeNetworkInterfaces``, filtered on that private address).
* **EC2**: IMDSv2, a session token (``PUT /latest/api/token``) then
  ``GET /latest/meta-data/public-ipv4``. The launch template requires IMDSv2 with hop limit 1, which
  also means a container on the instance with its own network namespace cannot reach it: there,
  run with host networking or pass ``--public-ip``.

Blocking (urllib, boto3); call from async code with ``asyncio.to_thread``. Proxies from the
environment are ignored: metadata endpoints are link-local and must never go through a proxy.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.request
from typing import Any

import boto3

from .settings import EC2_IMDS_URL

ECS_METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
TOKEN_TTL_S = 60

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DiscoveryError(RuntimeError):
    """The platform did not say what the public address is; pass --public-ip."""


def _checked_ipv4(value: str, source: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise DiscoveryError(f"{source} answered {value[:60]!r}, not an IPv4 address") from None


def imds_get(path: str, *, imds_url: str = EC2_IMDS_URL, timeout_s: float = 2.0) -> str:
    """One IMDSv2 metadata read (``path`` under ``/latest/meta-data/``), with a fresh token."""
    base = imds_url.rstrip("/")
    put = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
    try:
        with _opener.open(put, timeout=timeout_s) as r:
            token = r.read().decode()
        get = urllib.request.Request(f"{base}/latest/meta-data/{path}",
                                     headers={"X-aws-ec2-metadata-token": token})
        with _opener.open(get, timeout=timeout_s) as r:
            body: str = r.read().decode()
            return body
    except urllib.error.HTTPError as e:
        # 404 on public-ipv4: the instance has no public address (a subnet without auto-assign).
        raise DiscoveryError(f"IMDSv2 at {base}: {path}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DiscoveryError(f"IMDSv2 at {base} unreachable ({e}); not on EC2? pass --public-ip") from None


def imds_public_ip(*, imds_url: str = EC2_IMDS_URL, timeout_s: float = 2.0) -> str:
    return _checked_ipv4(imds_get("public-ipv4", imds_url=imds_url, timeout_s=timeout_s), "IMDSv2 public-ipv4")


def ecs_task_private_ip(metadata_uri: str, *, timeout_s: float = 2.0) -> tuple[str, str | None]:
    """(private IPv4 of the task, its region from the task ARN or None) from ECS task metadata v4."""
    try:
        with _opener.open(f"{metadata_uri.rstrip('/')}/task", timeout=timeout_s) as r:
            task: dict[str, Any] = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DiscoveryError(f"ECS task metadata at {metadata_uri}: {e}") from None
    for container in task.get("Containers", []):
        for network in container.get("Networks", []):
            for addr in network.get("IPv4Addresses", []):
                arn = str(task.get("TaskARN", "")).split(":")
                region = arn[3] if len(arn) > 3 and arn[3] else None
                return _checked_ipv4(addr, "ECS task metadata"), region
    raise DiscoveryError("ECS task metadata lists no IPv4 address (network mode other than awsvpc?)")


def eni_public_ip(private_ip: str, *, ec2_client: Any = None, region: str | None = None) -> str:
    """The public address associated with the network interface that holds ``private_ip``."""
    if ec2_client is None:
        ec2_client = boto3.session.Session(region_name=region).client("ec2")
    answer = ec2_client.describe_network_interfaces(
        Filters=[{"Name": "addresses.private-ip-address", "Values": [private_ip]}])
    for eni in answer.get("NetworkInterfaces", []):
        public = eni.get("Association", {}).get("PublicIp")
        if public:
            return _checked_ipv4(public, "ec2:DescribeNetworkInterfaces")
    raise DiscoveryError(f"the network interface of {private_ip} has no public IP (assignPublicIp disabled?)")


def discover_public_ip(*, imds_url: str = EC2_IMDS_URL, timeout_s: float = 2.0,
                       ecs_metadata_uri: str | None = None, ec2_client: Any = None) -> str:
    """ECS task metadata when ``ecs_metadata_uri`` (default: ``$ECS_CONTAINER_METADATA_URI_V4``) is
    set, else IMDSv2 at ``imds_url``. Raises :class:`DiscoveryError` with the reason."""
    if ecs_metadata_uri is None:
        ecs_metadata_uri = os.environ.get(ECS_METADATA_ENV) or None
    if ecs_metadata_uri:
        private_ip, region = ecs_task_private_ip(ecs_metadata_uri, timeout_s=timeout_s)
        return eni_public_ip(private_ip, ec2_client=ec2_client, region=region)
    return imds_public_ip(imds_url=imds_url, timeout_s=timeout_s)
