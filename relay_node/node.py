"""A relay node's parts wired together: socket table, control-plane agent, endpoints; and
``run_relay``, which serves one.

Not an ASGI app: the relay serves HTTP with its own protocol (``relay_node.edge.http1``) and runs
its own lifecycle (``relay_node.server``, which hosts the node as a ``HostedNode``), so
``start``/``stop`` are plain coroutines. The settings are frozen; what the node decides while it
starts (a slot's name as its fqdn, the slot's certificate) it holds itself.
"""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from polysocket_core.redis_client import RIDE_OUT, RedisUnusable, redis_client
from polysocket_redis.pipelines import pipelines_for

from . import server
from .control.agent import NodeAgent
from .control.fleetstats import FleetStats
from .edge.endpoints import CONSTANT_HEADERS, RelayEndpoints
from .edge.http1 import AnswerFn, Headers
from .metrics import RelayMetrics
from .settings import RelayConfig
from .sockets.table import SocketTable

if TYPE_CHECKING:
    from .control.aws.node import NodeCloud
    from .control.aws.slotnode import SlotNode
    from .control.aws.sweeper import RecordSweeper

log = logging.getLogger("polysocket.relay")


class RelayNode:
    """One relay node (a ``relay_node.server.HostedNode``)."""

    constant_headers: Sequence[Headers] = CONSTANT_HEADERS

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.fqdn = config.fqdn  # its public name: a slot's, when it leases one while starting
        self.metrics = RelayMetrics()
        self.table = SocketTable(config, self.metrics)
        # A Redis restart is ridden out (polysocket_core.redis_client), and the read timeout is far
        # above any pause the node may suffer: a node that wakes up must still read the establish
        # request its BLPOP was handed (else the request, and its token reservation, would be lost
        # with the connection). Keepalive finds dead peers instead.
        self.redis = redis_client(config.redis_url, patience=RIDE_OUT, ca_file=config.redis_ca_file)
        # The inbox read and the answers to routers: on the node's own connections (polysocket_redis)
        self.pipelines = pipelines_for(config.redis_url, self.redis, patience=RIDE_OUT, ca_file=config.redis_ca_file)
        self.agent = NodeAgent(config, self.table, self.redis, self.pipelines)
        self.stats = FleetStats(self.redis, self.agent.keys, config.node_id, heartbeat_ttl_s=config.heartbeat_ttl_s,
                                opened=lambda: self.metrics.sockets_total.value, slot=self._slot_name)
        self.endpoints = RelayEndpoints(config, self.table, self.metrics, draining=lambda: self.agent.draining,
                                        fqdn=lambda: self.fqdn)
        self.cloud: NodeCloud | None = None
        self.slot: SlotNode | None = None
        self.sweeper: RecordSweeper | None = None  # with Route 53 names: this node's share of the sweep
        self.ssl_context: ssl.SSLContext | None = None  # the slot certificate's, when it has one
        self.request_drain: Callable[[], None] | None = None  # set by the server: drain as on SIGTERM

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def max_body(self) -> int:
        return self.endpoints.max_body

    @property
    def answer(self) -> AnswerFn:
        return self.endpoints.answer

    def _slot_name(self) -> str:
        return (self.slot.slot or "") if self.slot is not None else ""

    async def drain(self) -> None:
        await self.agent.drain()

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
        that does not resolve yet; then take establish requests. Redis refusing the node (a wrong
        password, a certificate not trusted) fails the start with one line that says why."""
        try:
            await self._start()
        except RedisError as exc:
            raise RedisUnusable(self.config.redis_url, exc) from exc

    async def _start(self) -> None:
        if self.config.cloud.slots_enabled:
            from .control.aws.slotnode import SlotNode  # boto3 and acme only where slots are used

            self.slot = SlotNode(self.config.cloud, self.redis, key_prefix=self.config.key_prefix,
                                 node_id=self.config.node_id, on_lost=self._slot_lost)
            self.fqdn = await self.slot.start()
            self.ssl_context = self.slot.ssl_context
            self._check_slot("its certificate was ready")
        if self.config.cloud.enabled:
            from .control.aws.node import NodeCloud  # boto3 only where AWS is used

            self.cloud = NodeCloud(self.config.cloud, self.fqdn,
                                   lambda: (self.table.load, self.config.capacity))
            await self.cloud.start()
            self._check_slot("its records were written")
        await self.agent.start(self.fqdn)
        self.stats.start()  # after registering: a node Redis refused has nothing to report
        if self.config.cloud.dns_enabled:
            self._start_sweeper()

    def _start_sweeper(self) -> None:
        """Every node with Route 53 names takes part in the fleet's sweep of dead nodes' records
        (one at a time, under a Redis lock): a SIGKILLed node cannot withdraw its own."""
        from polysocket_core.control import Keys

        from .control.aws.sweeper import RecordSweeper

        m = self.metrics
        self.sweeper = RecordSweeper.for_node(
            self.config.cloud, self.redis, Keys(self.config.key_prefix), fqdn=self.fqdn,
            heartbeat_ttl_s=self.config.heartbeat_ttl_s, sweeps=m.sweeps, removed=m.records_swept,
            failures=m.sweep_failures)
        self.sweeper.start()

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
        if self.sweeper is not None:
            await self.sweeper.stop()  # first: it must not sweep with a half-stopped node
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
                    await self.stats.stop()  # last before Redis closes: it deletes the node's report
                    await self.pipelines.aclose()
                    await self.redis.aclose()


def run_relay(config: RelayConfig) -> None:
    """Serve until drained. With a certificate the relay speaks HTTPS: pages served over HTTPS can
    only load scripts and make XHRs to HTTPS relays (mixed content is blocked)."""
    ssl_ctx = server.ssl_context(config.ssl_certfile, config.ssl_keyfile) if config.ssl_certfile else None
    status = server.serve(RelayNode(config), config.host, config.port, ssl_ctx)
    log.info("relay %s stopped", config.node_id)
    if status:
        sys.exit(status)
