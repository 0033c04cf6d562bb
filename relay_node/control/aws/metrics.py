"""The relay's load in CloudWatch, for the autoscaling policy: ``OpenSockets`` (Count) and
``Utilization`` (Percent: open sockets / capacity), every interval, from a callable, so this
module knows nothing of the socket table."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import boto3

log = logging.getLogger("polysocket.relay.aws")

Load = Callable[[], tuple[int, int]]  # () -> (open_sockets, capacity)


def cloudwatch_client() -> Any:
    """A client configured by the SDK alone (credentials, region, AWS_ENDPOINT_URL[_CLOUDWATCH])."""
    return boto3.session.Session().client("cloudwatch")


def metric_data(open_sockets: int, capacity: int, dimension_name: str = "",
                dimension_value: str = "") -> list[dict[str, Any]]:
    """The MetricData of one put_metric_data call."""
    dims = [{"Name": dimension_name, "Value": dimension_value}] if dimension_name and dimension_value else []
    utilization = 100.0 * open_sockets / capacity if capacity > 0 else 0.0
    return [
        {"MetricName": "OpenSockets", "Dimensions": dims, "Unit": "Count", "Value": float(open_sockets)},
        {"MetricName": "Utilization", "Dimensions": dims, "Unit": "Percent", "Value": utilization},
    ]


class MetricPublisher:
    """Publishes ``load()`` every ``interval_s`` until stopped; a failed call is logged and retried at
    the next tick (a CloudWatch outage must not touch the data path)."""

    def __init__(self, namespace: str, load: Load, *, interval_s: float = 60.0, dimension_name: str = "",
                 dimension_value: str = "", client: Any = None) -> None:
        self.namespace = namespace
        self.load = load
        self.interval_s = interval_s
        self.dimension_name = dimension_name
        self.dimension_value = dimension_value
        self._client = client
        self._task: asyncio.Task[None] | None = None
        self.published = 0  # successful put_metric_data calls
        self.failures = 0

    def _put(self, data: list[dict[str, Any]]) -> None:
        if self._client is None:
            self._client = cloudwatch_client()
        self._client.put_metric_data(Namespace=self.namespace, MetricData=data)

    async def publish_once(self) -> None:
        """One datapoint of each metric now (the load is read on the loop, the call runs in a thread)."""
        open_sockets, capacity = self.load()
        await asyncio.to_thread(self._put, metric_data(open_sockets, capacity, self.dimension_name,
                                                       self.dimension_value))
        self.published += 1

    async def run(self) -> None:
        while True:
            try:
                await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # botocore errors, credentials, network: keep serving
                self.failures += 1
                log.warning("cloudwatch: put_metric_data to %s failed: %s", self.namespace, e)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="cloudwatch-publisher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
