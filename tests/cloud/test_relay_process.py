"""`polysocket relay` as the fleet runs it, against LocalStack: its flags alone make it publish its
Route 53 records before it registers in Redis, publish its CloudWatch metric while it lives, and
withdraw its records when SIGTERM has drained it. Real relay process, real Valkey, real LocalStack."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import redis

from polysocket_cli.processes import Stack
from polysocket_core.control import Keys

from .conftest import a_records

pytestmark = pytest.mark.cloud


def test_relay_flags_register_dns_and_metrics_and_withdraw_on_drain(
        localstack: Any, route53: Any, cloudwatch: Any, zone: tuple[str, str]) -> None:
    zone_id, domain = zone
    name = f"s07.relay.{domain}"
    namespace = f"Polysocket/{domain}"
    stack = Stack()
    try:
        stack.start_valkey()
        relay = stack.start_relay(
            "s07", fqdn=f"{name}:443",
            extra=["--route53-zone-id", zone_id, "--public-ip", "203.0.113.44", "--route53-insync-poll", "0.1",
                   "--cloudwatch-namespace", namespace, "--cloudwatch-interval", "0.5",
                   "--cloudwatch-dimension-value", "relays-test", "--drain-grace", "0"],
            env=dict(localstack.client_env()))
        # Healthy means registered in Redis, which happens only after the records are INSYNC.
        assert redis.Redis.from_url(stack.redis_url).sismember(Keys().nodes, "s07")
        records = a_records(route53, zone_id)
        assert records[name][1] == ["203.0.113.44"] and records[f"*.{name}"][1] == ["203.0.113.44"]

        deadline = time.monotonic() + 30
        metrics: list[str] = []
        while time.monotonic() < deadline and "Utilization" not in metrics:
            metrics = [m["MetricName"] for m in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]]
            time.sleep(0.5)
        assert {"OpenSockets", "Utilization"} <= set(metrics), metrics

        assert relay.stop(timeout=30) == 0  # SIGTERM: drain, deregister, then the records go
        remaining = a_records(route53, zone_id)
        assert name not in remaining and f"*.{name}" not in remaining, remaining
    finally:
        stack.stop()
    assert os.environ.get("AWS_ENDPOINT_URL")  # the SDK's own variable carried the endpoint
