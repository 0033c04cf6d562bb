"""The relay's AWS side as one object the agent starts and stops."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .discovery import discover_public_ip
from .metrics import Load, MetricPublisher
from .route53 import delete_node_records, node_record_names, route53_client, upsert_node_records, wait_insync
from .settings import CloudSettings

log = logging.getLogger("polysocket.relay.aws")


class NodeCloud:
    """``start()`` before the node registers in Redis: UPSERT ``{name}`` and ``*.{name}`` to the public
    address, wait until INSYNC (so the router never hands out a name that does not resolve yet),
    then start publishing the load. ``stop()`` after the node has drained and deregistered: stop
    publishing, DELETE the records. Each part is off unless its setting is given.

    ``fqdn`` is the node's ``--fqdn`` (a port is ignored); ``load`` returns (open sockets, capacity).
    """

    def __init__(self, settings: CloudSettings, fqdn: str, load: Load, *, route53: Any = None,
                 cloudwatch: Any = None, ec2: Any = None) -> None:
        self.settings = settings
        self.names = node_record_names(fqdn)
        self.public_ip: str | None = settings.public_ip or None
        self._route53 = route53
        self._ec2 = ec2
        self._registered = False
        self.publisher: MetricPublisher | None = None
        if settings.metrics_enabled:
            self.publisher = MetricPublisher(
                settings.cloudwatch_namespace, load, interval_s=settings.metric_interval_s,
                dimension_name=settings.metric_dimension_name, dimension_value=settings.metric_dimension_value,
                client=cloudwatch)

    def _client(self) -> Any:
        if self._route53 is None:
            self._route53 = route53_client()
        return self._route53

    async def resolve_public_ip(self) -> str:
        if self.public_ip is None:
            s = self.settings
            self.public_ip = await asyncio.to_thread(discover_public_ip, imds_url=s.imds_url,
                                                     timeout_s=s.metadata_timeout_s, ec2_client=self._ec2)
            log.info("aws: public address %s discovered", self.public_ip)
        return self.public_ip

    def _register(self, ip: str) -> None:
        s = self.settings
        client = self._client()
        change = upsert_node_records(client, s.zone_id, self.names[0], ip, s.record_ttl_s)
        self._registered = True  # from here on, stop() deletes, even if the wait fails
        wait_insync(client, change, timeout_s=s.insync_timeout_s, poll_s=s.insync_poll_s)
        log.info("route53: %s and %s -> %s INSYNC", *self.names, ip)

    async def start(self) -> None:
        if self.settings.dns_enabled:
            ip = await self.resolve_public_ip()
            await asyncio.to_thread(self._register, ip)
        if self.publisher is not None:
            self.publisher.start()

    def disown_records(self) -> None:
        """The node's name passed to another node (its slot lease was lost): leave the records,
        which are now the other node's, in place at stop."""
        self._registered = False

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()
        if self._registered:
            s = self.settings
            await asyncio.to_thread(delete_node_records, self._client(), s.zone_id, self.names[0],
                                    self.public_ip, s.record_ttl_s)
            self._registered = False
