"""A relay node's parts wired together: socket table, control-plane agent, endpoints.

Not an ASGI app any more: the relay serves HTTP with its own protocol (``relay_node.http1``) and
runs its own lifecycle (``relay_node.server``), so ``start``/``stop`` are plain coroutines.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from polysocket_core.redis_client import RIDE_OUT, redis_client

from .agent import NodeAgent
from .config import RelayConfig
from .endpoints import RelayEndpoints
from .metrics import RelayMetrics
from .table import SocketTable

if TYPE_CHECKING:
    from .aws.node import NodeCloud
    from .aws.slotnode import SlotNode

log = logging.getLogger("polysocket.relay")


class RelayNode:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.metrics = RelayMetrics()
        self.table = SocketTable(config, self.metrics)
        # A Redis restart is ridden out (polysocket_core.redis_client), and the read timeout is far
        # above any pause the node may suffer: a node that wakes up must still read the establish
        # request its BLPOP was handed (else the request, and its token reservation, would be lost
        # with the connection). Keepalive finds dead peers instead.
        self.redis = redis_client(config.redis_url, patience=RIDE_OUT, ca_file=config.redis_ca_file)
        self.agent = NodeAgent(config, self.table, self.redis)
        self.endpoints = RelayEndpoints(self.table, self.metrics, self.agent)
        self.cloud: NodeCloud | None = None
        self.slot: SlotNode | None = None
        self.ssl_context: ssl.SSLContext | None = None  # the slot certificate's, when it has one
        self.request_drain: Callable[[], None] | None = None  # set by the server: drain as on SIGTERM

    def _slot_lost(self) -> None:
        """Another node holds our slot now (our lease expired): its name is no longer ours, so its
        DNS records are not ours to delete, and this node drains."""
        if self.cloud is not None:
            self.cloud.disown_records()
        if self.request_drain is not None:
            self.request_drain()

    async def start(self) -> None:
        """With a relay domain, lease a slot first: its name is the node's fqdn, and with ACME on,
        its certificate is what the relay serves. Then publish the node's DNS names (when
        configured) before registering with the control plane, so the router never hands out a name
        that does not resolve yet; then take establish requests."""
        if self.config.cloud.slots_enabled:
            from .aws.slotnode import SlotNode  # boto3 and acme only where slots are used

            self.slot = SlotNode(self.config.cloud, self.redis, key_prefix=self.config.key_prefix,
                                 node_id=self.config.node_id, on_lost=self._slot_lost)
            self.config.fqdn = await self.slot.start()
            self.ssl_context = self.slot.ssl_context
            self._check_slot("its certificate was ready")
        if self.config.cloud.enabled:
            from .aws.node import NodeCloud  # boto3 only where AWS is used

            self.cloud = NodeCloud(self.config.cloud, self.config.fqdn,
                                   lambda: (self.table.load, self.config.capacity))
            await self.cloud.start()
            self._check_slot("its records were written")
        await self.agent.start()

    def _check_slot(self, when: str) -> None:
        """A lease can lapse during a slow start (a certificate order, Route 53 INSYNC): the slot's
        name belongs to another node then, so this one must not write its records or register.
        Failing the start makes the orchestrator start a fresh node, which leases another slot."""
        if self.slot is not None and self.slot.lost:
            if self.cloud is not None:
                self.cloud.disown_records()
            raise RuntimeError(f"slot lease lost before {when}; not registering")

    async def stop(self) -> None:
        """Deregister, drop every socket; withdraw the DNS names; release the slot (after the names,
        so the slot's next holder never loses its records to this clean-up); close Redis."""
        try:
            await self.agent.stop()
        finally:
            try:
                if self.cloud is not None:
                    await self.cloud.stop()
            finally:
                try:
                    if self.slot is not None:
                        await self.slot.stop()
                finally:
                    await self.redis.aclose()
