"""The relay's load in CloudWatch: OpenSockets and Utilization with the autoscaling dimension."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest

from relay_node.control.aws.metrics import metric_data
from relay_node.control.aws.node import NodeCloud
from relay_node.control.aws.settings import CloudSettings

pytestmark = pytest.mark.cloud


def test_metric_data_shape() -> None:
    data = metric_data(25, 200, "AutoScalingGroupName", "asg-1")
    assert [(d["MetricName"], d["Unit"], d["Value"]) for d in data] == [
        ("OpenSockets", "Count", 25.0), ("Utilization", "Percent", 12.5)]
    assert data[0]["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": "asg-1"}]
    assert metric_data(3, 0)[1]["Value"] == 0.0 and metric_data(3, 0)[0]["Dimensions"] == []


async def test_publisher_datapoints_visible(cloudwatch: Any) -> None:
    namespace = f"PolysocketTest/{uuid.uuid4().hex[:8]}"
    load = [(42, 100)]
    settings = CloudSettings(cloudwatch_namespace=namespace, metric_interval_s=0.2,
                             metric_dimension_name="AutoScalingGroupName", metric_dimension_value="relays-test")
    node = NodeCloud(settings, "n1.relay.test", lambda: load[-1])
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    await node.start()  # no zone id: no Route 53 call, only the publisher
    assert node.publisher is not None
    async with asyncio.timeout(20):
        while node.publisher.published < 3:
            await asyncio.sleep(0.05)
    await node.stop()
    published = node.publisher.published
    assert node.publisher.failures == 0
    await asyncio.sleep(0.5)
    assert node.publisher.published == published  # stopped

    dims = [{"Name": "AutoScalingGroupName", "Value": "relays-test"}]
    listed = cloudwatch.list_metrics(Namespace=namespace)["Metrics"]
    assert sorted((m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in listed) == [
        ("OpenSockets", (("AutoScalingGroupName", "relays-test"),)),
        ("Utilization", (("AutoScalingGroupName", "relays-test"),))]
    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    for metric, value in (("OpenSockets", 42.0), ("Utilization", 42.0)):
        points = cloudwatch.get_metric_statistics(Namespace=namespace, MetricName=metric, Dimensions=dims,
                                                  StartTime=t0, EndTime=end, Period=60,
                                                  Statistics=["Maximum", "Minimum", "SampleCount"])["Datapoints"]
        assert points, metric
        assert sum(p["SampleCount"] for p in points) == published
        assert max(p["Maximum"] for p in points) == value and min(p["Minimum"] for p in points) == value


async def test_publisher_survives_failures() -> None:
    """A failing put (CloudWatch down, no credentials) is counted, logged and retried, never raised."""

    class Down:
        def put_metric_data(self, **kw: Any) -> None:
            raise ConnectionError("endpoint unreachable")

    node = NodeCloud(CloudSettings(cloudwatch_namespace="Polysocket", metric_interval_s=0.05), "n1.relay.test",
                     lambda: (1, 2), cloudwatch=Down())
    await node.start()
    assert node.publisher is not None
    async with asyncio.timeout(10):
        while node.publisher.failures < 3:
            await asyncio.sleep(0.02)
    await node.stop()
    assert node.publisher.published == 0
