"""The relay's AWS side, all off unless configured: its Route 53 records, its CloudWatch metric,
its public address, and the sweeper for records of nodes that died uncleanly.

Every AWS call goes through boto3 with the SDK's own configuration: credentials, region and
endpoints (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_ROUTE53`` / ``AWS_ENDPOINT_URL_CLOUDWATCH`` /
``AWS_ENDPOINT_URL_EC2``), so the same code runs against LocalStack with no flag of its own.
Blocking boto3 calls run in a worker thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

from .discovery import DiscoveryError, discover_public_ip
from .metrics import MetricPublisher, metric_data
from .node import NodeCloud
from .route53 import (
    RecordSweeper,
    delete_node_records,
    node_record_names,
    sweep_records,
    upsert_node_records,
    wait_insync,
)
from .settings import CloudSettings

__all__ = [
    "CloudSettings",
    "DiscoveryError",
    "MetricPublisher",
    "NodeCloud",
    "RecordSweeper",
    "delete_node_records",
    "discover_public_ip",
    "metric_data",
    "node_record_names",
    "sweep_records",
    "upsert_node_records",
    "wait_insync",
]
