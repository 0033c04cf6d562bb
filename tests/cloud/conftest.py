"""LocalStack for the ``cloud`` tests: one process for the whole session, on loopback ports.

LocalStack must be installed (``localstack/install.sh``, into a venv of its own); without it these
tests FAIL with the install hint, they are not skipped. boto3 in the test process reaches it only
through the SDK's standard ``AWS_ENDPOINT_URL``, as the relay would in production.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

# the slot-certificate tests' session fixtures: Valkey, a DNS server serving Route 53, pebble
from .acme_env import pebble, route53_dns, valkey  # noqa: F401

HARNESS_PATH = Path(__file__).resolve().parents[2] / "localstack" / "harness.py"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cloud: needs LocalStack (localstack/install.sh) on loopback")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/cloud is a ``cloud`` test, marked or not: ``pytest -m cloud`` selects them
    all (two files without the module mark were silently left out before)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cloud)


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("polysocket_localstack_harness", HARNESS_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def localstack() -> Iterator[Any]:
    harness = _harness()
    missing = None
    try:
        ls = harness.LocalStack(services="route53,cloudwatch,ec2,secretsmanager,s3,kms")
    except harness.LocalStackMissing as e:
        missing = str(e)
    if missing is not None:
        pytest.fail(missing, pytrace=False)  # a failure, not a skip: CI must install it
    ls.start()
    saved = {k: os.environ.get(k) for k in ls.client_env()}
    os.environ.update(ls.client_env())
    try:
        # LocalStack loads each service at its first request (4-14 s each on a loaded 2-core
        # machine): do it here, once, so no single test carries that cost.
        t0 = time.monotonic()
        session = boto3.session.Session()
        session.client("route53").list_hosted_zones()
        session.client("cloudwatch").list_metrics()
        session.client("ec2").describe_vpcs()
        print(f"\nLocalStack ready in {ls.startup_s:.1f} s at {ls.endpoint}, services loaded in "
              f"{time.monotonic() - t0:.1f} s")
        yield ls
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        ls.stop()


@pytest.fixture
def route53(localstack: Any) -> Any:
    return boto3.session.Session().client("route53")


@pytest.fixture
def cloudwatch(localstack: Any) -> Any:
    return boto3.session.Session().client("cloudwatch")


@pytest.fixture
def ec2(localstack: Any) -> Any:
    return boto3.session.Session().client("ec2")


@pytest.fixture
def zone(route53: Any) -> Iterator[tuple[str, str]]:
    """A fresh hosted zone ``{random}.test`` per test: (zone id, zone name)."""
    name = f"z{uuid.uuid4().hex[:10]}.test"
    zone_id = route53.create_hosted_zone(Name=name, CallerReference=f"{name}-{time.time()}")["HostedZone"]["Id"]
    yield zone_id, name


def a_records(route53: Any, zone_id: str) -> dict[str, tuple[int, list[str]]]:
    """{name: (ttl, values)} of the zone's A records, names normalised (no final dot, ``*`` unescaped)."""
    out = {}
    for page in route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
        for r in page["ResourceRecordSets"]:
            if r["Type"] == "A":
                name = r["Name"].replace("\\052", "*").rstrip(".")
                out[name] = (r["TTL"], [v["Value"] for v in r["ResourceRecords"]])
    return out
