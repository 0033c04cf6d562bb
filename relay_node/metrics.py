"""Prometheus metrics of one relay node, in a registry of its own (several nodes may share a process in tests).

The data path bumps these once or more per message, so they are plain ints and floats in
``__slots__`` objects (no lock, no label lookup: the relay is one thread on one event loop),
turned into Prometheus families only when ``/metrics`` is scraped. The exported names, types and
``_created`` samples are the ones ``prometheus_client``'s own Counter/Gauge/Histogram would give.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class Count:  # perf: plain-metrics
    """A monotonic counter."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class Level:
    """A gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value


class LabeledCount:
    """Counters by one label value, created on first use."""

    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str, Count] = {}

    def labels(self, value: str) -> Count:
        child = self.children.get(value)
        if child is None:
            child = self.children[value] = Count()
        return child


class Hist:
    """A histogram with fixed upper bounds (``+Inf`` added)."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(acc)))
        return out


class RelayMetrics(Collector):
    __slots__ = ("answers_cut", "budget", "budget_parks", "buffered", "bytes_in", "bytes_out", "errors",
                 "frames_in", "frames_out", "open_sockets", "poll_waits", "records_swept", "registry",
                 "socket_checks", "sockets_total", "streams_open", "streams_total", "sweep_failures", "sweeps")

    HELP = {
        "open_sockets": ("polysocket_open_sockets", "WebSockets held by this node"),
        "sockets_total": ("polysocket_sockets_opened", "Upstream WebSockets opened"),
        "frames_in": ("polysocket_frames_to_target", "Frames sent from clients to targets"),
        "frames_out": ("polysocket_frames_to_client", "Frames received from targets for clients"),
        "bytes_in": ("polysocket_bytes_to_target", "Payload bytes to targets"),
        "bytes_out": ("polysocket_bytes_to_client", "Payload bytes from targets"),
        "streams_open": ("polysocket_open_streams", "GET /stream answers being written"),
        "streams_total": ("polysocket_streams", "GET /stream answers started"),
        "answers_cut": ("polysocket_answers_cut", "Connections cut because a newer stream or poll took their "
                        "socket over while they still held its messages unsent"),
        "buffered": ("polysocket_buffered_bytes", "Bytes of messages held for clients until they acknowledge them, "
                     "all sockets together (as of the last sweep)"),
        "budget": ("polysocket_buffer_budget_bytes", "--buffer-budget: at this many buffered bytes, sockets holding "
                   "their share pause reading their targets"),
        "budget_parks": ("polysocket_budget_parks", "Times a socket paused reading its target because the node's "
                         "buffer budget was reached (its own --buffer-bytes not)"),
        "socket_checks": ("polysocket_socket_checks", "Sockets the keep-alive sweep checked: only those due, "
                          "about one per socket per ping interval at rest"),
        "poll_waits": ("polysocket_poll_wait_seconds", "How long polls waited before answering"),
        "errors": ("polysocket_errors", "Errors answered, by code"),
        "sweeps": ("polysocket_dns_sweeps", "Sweeps of stale DNS records this node ran (the fleet runs one at a time)"),
        "records_swept": ("polysocket_dns_records_swept", "A records of dead nodes this node's sweeps deleted"),
        "sweep_failures": ("polysocket_dns_sweep_failures", "Sweeps of stale DNS records that failed"),
    }

    def __init__(self) -> None:
        self.open_sockets = Level()
        self.sockets_total = Count()
        self.frames_in = Count()
        self.frames_out = Count()
        self.bytes_in = Count()
        self.bytes_out = Count()
        self.streams_open = Level()
        self.streams_total = Count()
        self.answers_cut = Count()
        self.buffered = Level()
        self.budget = Level()
        self.budget_parks = Count()
        self.socket_checks = Count()
        self.poll_waits = Hist((0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60))
        self.errors = LabeledCount()
        self.sweeps = Count()
        self.records_swept = Count()
        self.sweep_failures = Count()
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        name, doc = self.HELP["open_sockets"]
        yield GaugeMetricFamily(name, doc, value=self.open_sockets.value)
        for attr in ("streams_open", "buffered", "budget"):
            level: Level = getattr(self, attr)
            name, doc = self.HELP[attr]
            yield GaugeMetricFamily(name, doc, value=level.value)
        for attr in ("sockets_total", "streams_total", "answers_cut", "budget_parks", "socket_checks", "frames_in",
                     "frames_out", "bytes_in", "bytes_out", "sweeps", "records_swept", "sweep_failures"):
            c: Count = getattr(self, attr)
            name, doc = self.HELP[attr]
            yield CounterMetricFamily(name, doc, value=c.value, created=c.created)
        name, doc = self.HELP["poll_waits"]
        h = self.poll_waits
        hist = HistogramMetricFamily(name, doc)
        hist.add_metric([], h.cumulative(), sum_value=h.sum, timestamp=None)
        yield hist
        yield GaugeMetricFamily(name + "_created", doc, value=h.created)
        name, doc = self.HELP["errors"]
        errors = CounterMetricFamily(name, doc, labels=["code"])
        for code, child in self.errors.children.items():
            errors.add_metric([code], child.value, created=child.created)
        yield errors

    def render(self) -> bytes:
        return generate_latest(self.registry)
