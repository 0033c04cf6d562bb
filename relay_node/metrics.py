"""Prometheus metrics of one relay node, in a registry of its own (several nodes may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class RelayMetrics:
    __slots__ = ("bytes_in", "bytes_out", "errors", "frames_in", "frames_out", "open_sockets",
                 "poll_waits", "registry", "sockets_total")

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.open_sockets = Gauge("polysocket_open_sockets", "WebSockets held by this node", registry=r)
        self.sockets_total = Counter(
            "polysocket_sockets_opened", "Upstream WebSockets opened", registry=r
        )
        self.frames_in = Counter(
            "polysocket_frames_to_target", "Frames sent from clients to targets", registry=r
        )
        self.frames_out = Counter(
            "polysocket_frames_to_client", "Frames received from targets for clients", registry=r
        )
        self.bytes_in = Counter("polysocket_bytes_to_target", "Payload bytes to targets", registry=r)
        self.bytes_out = Counter("polysocket_bytes_to_client", "Payload bytes from targets", registry=r)
        self.poll_waits = Histogram(
            "polysocket_poll_wait_seconds",
            "How long polls waited before answering",
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60),
            registry=r,
        )
        self.errors = Counter("polysocket_errors", "Errors answered, by code", ["code"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
