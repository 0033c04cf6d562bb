"""Session fixtures for the slot-certificate tests (imported by ``conftest.py``): a Valkey, the DNS
server that serves LocalStack's Route 53 zones, and pebble checking DNS-01 against it.

pebble missing is a failure with its install hint, never a skip (as LocalStack missing is).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from polysocket_cli.processes import Stack

from .pebble import Pebble, PebbleMissing
from .route53_dns import Route53DNS


def free_udp_tcp_port() -> int:
    """A loopback port free for both TCP and UDP (a DNS server takes both): the harness's own."""
    from .conftest import _harness

    return int(_harness().free_port())


@pytest.fixture(scope="session")
def valkey() -> Iterator[str]:
    """A Valkey for the session; its URL."""
    stack = Stack()
    try:
        stack.start_valkey()
        yield stack.redis_url
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def route53_dns(localstack: Any) -> Iterator[Route53DNS]:
    dns = Route53DNS(boto3.session.Session().client("route53"), free_udp_tcp_port()).start()
    try:
        yield dns
    finally:
        dns.stop()


@pytest.fixture(scope="session")
def pebble(route53_dns: Route53DNS) -> Iterator[Pebble]:
    missing = None
    try:
        p = Pebble(route53_dns.address)
    except PebbleMissing as e:
        missing = str(e)
    if missing is not None:
        pytest.fail(missing, pytrace=False)
    p.start()
    try:
        yield p
    finally:
        p.stop()
