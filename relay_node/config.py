"""Relay node settings; every field is also a ``--flag`` and a ``POLYSOCKET_*`` variable (see the CLI)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


def default_node_id() -> str:
    return socket.gethostname().split(".")[0] or "node"


@dataclass(slots=True)
class RelayConfig:
    fqdn: str  # public name, may carry a port for local use: "node1.localhost:8101"
    node_id: str = field(default_factory=default_node_id)
    capacity: int = 10_000
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ps:"
    max_message_bytes: int = 4 * 1024 * 1024
    buffer_high_bytes: int = 1024 * 1024  # unacked bytes at which reading upstream pauses
    poll_batch_bytes: int = 512 * 1024  # soft size of one poll answer
    max_poll_ttl_ms: int = 55_000
    idle_timeout_s: float = 60.0  # no poll/send for this long: close upstream with 1001
    gap_hold_s: float = 10.0  # how long an out-of-order send waits for its predecessor
    open_timeout_s: float = 10.0  # TCP + TLS + WebSocket handshake to the target
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    close_timeout_s: float = 5.0
    heartbeat_interval_s: float = 1.0
    heartbeat_ttl_s: float = 5.0
    drain_grace_s: float = 10.0  # after SIGTERM: keep serving this long before closing sockets
    sweep_interval_s: float = 1.0
    metrics_token: str = ""  # when set, GET /metrics needs "Authorization: Bearer <token>"
