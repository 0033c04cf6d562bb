"""Relay node settings, declared once: each field is a ``--flag`` of ``polysocket relay`` and a
``POLYSOCKET_*`` variable. Pure: importing it does no I/O."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from polysocket_core.control import NODE_ID_RE
from polysocket_core.settings import (
    SettingError,
    check_floors,
    group,
    key_prefix_setting,
    optional_seconds,
    port,
    positive_int,
    redis_ca_file_setting,
    redis_url_setting,
    seconds,
    setting,
    show_optional_seconds,
    text,
)
from polysocket_core.sse import DEFAULT_STREAM_BYTES, DEFAULT_STREAM_SECONDS
from polysocket_core.wire import MAX_POLL_TTL_MS, MIN_STREAM_TTL_MS

from .control.aws.settings import CloudSettings

# The floor of the relay's repeating intervals: each tick costs a pass (over every socket, for the
# sweep) or a request, so below this they would spin rather than fail.
MIN_INTERVAL_S = 0.1


def default_node_id() -> str:
    return socket.gethostname().split(".")[0] or "node"


def _ms(raw: str) -> int:
    return int(seconds(raw) * 1000)


def _show_ms(value: int) -> str:
    return f"{value / 1000:g}"


def _node_id(raw: str) -> str:
    if NODE_ID_RE.fullmatch(raw) is None:
        raise ValueError("must be 1-64 of A-Z a-z 0-9 _ . -")
    return raw


def _auto_bytes(raw: str) -> int | None:
    """A positive number of bytes, or ``auto`` (None: derived where the node starts)."""
    return None if raw.strip().lower() == "auto" else positive_int(raw)


def _show_auto(value: int | None) -> str:
    return "auto" if value is None else str(value)


def _fqdn(raw: str) -> str:
    if not raw or "/" in raw or any(c.isspace() for c in raw):
        raise ValueError("must be a host name, optionally with :port")
    return raw


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Frozen: what was configured. What a node decides at run time (a slot's name as its fqdn) it
    holds itself (``relay_node.node.RelayNode.fqdn``)."""

    fqdn: str = setting("", _fqdn, "public name of this node, clients use {uniq}.FQDN (may carry :port); "
                        "default: HOST:PORT")
    node_id: str = setting(parse=_node_id, help="unique node id, shown in metrics and logs",
                           factory=default_node_id)
    capacity: int = setting(10_000, positive_int, "most sockets this node holds")
    redis_url: str = redis_url_setting()
    redis_ca_file: str = redis_ca_file_setting()
    key_prefix: str = key_prefix_setting()
    max_message_bytes: int = setting(4 * 1024 * 1024, positive_int, "largest message, bytes", name="max-message")
    buffer_high_bytes: int = setting(1024 * 1024, positive_int,
                                     "unacked bytes per socket at which reading upstream pauses",
                                     name="buffer-bytes")
    buffer_budget_bytes: int | None = setting(None, _auto_bytes, "unacked bytes of all sockets together at "
                                              "which a socket holding its share (this / --capacity) pauses "
                                              "reading upstream; 'auto' (the default): a quarter of the memory "
                                              "the relay may use (its cgroup's limit, else the machine's)",
                                              name="buffer-budget", show=_show_auto)
    poll_batch_bytes: int = setting(512 * 1024, positive_int, "soft size of one poll answer, bytes")
    max_poll_ttl_ms: int = setting(MAX_POLL_TTL_MS, _ms, "longest a poll may wait for data, seconds "
                                   "(a waiting poll keeps its socket alive)", name="max-poll-ttl", show=_show_ms,
                                   floor=MIN_STREAM_TTL_MS)  # it caps the stream heartbeat interval
    stream_bytes: int = setting(DEFAULT_STREAM_BYTES, positive_int, "bytes of messages one GET /stream answer "
                                "carries before it ends (the client resumes with a new one)")
    stream_seconds: float = setting(DEFAULT_STREAM_SECONDS, seconds, "longest one GET /stream answer stays open, "
                                    "seconds", floor=MIN_INTERVAL_S)  # clients reconnect this often
    idle_timeout_s: float = setting(60.0, seconds, "close sockets with no poll or send for this long",
                                    name="idle-timeout")
    gap_hold_s: float = setting(10.0, seconds, "how long a send waits for a missing seq", name="gap-hold")
    open_timeout_s: float = setting(10.0, seconds, "TCP + TLS + WebSocket handshake to the target",
                                    name="open-timeout")
    ping_interval_s: float | None = setting(20.0, optional_seconds, "WebSocket ping to the target every "
                                            "this long, or 'off'", name="ping-interval", show=show_optional_seconds,
                                            floor=MIN_INTERVAL_S)
    ping_timeout_s: float | None = setting(20.0, optional_seconds, "drop the target when a ping is not "
                                           "answered this fast, or 'off'", name="ping-timeout",
                                           show=show_optional_seconds)
    close_timeout_s: float = setting(5.0, seconds, "wait this long for the target's closing handshake",
                                     name="close-timeout")
    heartbeat_ttl_s: float = setting(5.0, seconds, "node counts as dead this long after its last heartbeat",
                                     name="heartbeat-ttl", floor=0.3)  # a beat every TTL / 3: MIN_INTERVAL_S
    drain_grace_s: float = setting(10.0, seconds, "on SIGTERM, serve this long before closing sockets",
                                   name="drain-grace")
    sweep_interval_s: float = setting(1.0, seconds, "how often idle sockets are looked for", name="sweep-interval",
                                      floor=MIN_INTERVAL_S)
    metrics_token: str = setting("", text, "require 'Authorization: Bearer TOKEN' for /metrics "
                                 "(it is served on the public port)", secret=True)
    host: str = setting("127.0.0.1", text, "address to listen on")
    port: int = setting(8101, port, "port to listen on")
    ssl_certfile: str = setting("", text, "serve HTTPS with this certificate chain (PEM); needed for HTTPS pages")
    ssl_keyfile: str = setting("", text, "private key (PEM) of --ssl-certfile")
    cloud: CloudSettings = group(CloudSettings)  # noqa: RUF009 - a field(default_factory=CloudSettings)

    def __post_init__(self) -> None:
        if not self.fqdn:
            object.__setattr__(self, "fqdn", f"{self.host}:{self.port}")  # the default, derived once
        check_floors(self)
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise SettingError("--ssl-certfile and --ssl-keyfile go together")
        if self.ssl_certfile and self.cloud.certs_enabled:
            raise SettingError("--ssl-certfile and --acme-directory exclude each other (the slot's "
                               "certificate is served)")

    @property
    def claim_margin_s(self) -> float:
        """How long after the router's last moment to answer (its establish request's expiry) the
        browser's first request may still claim the socket (``polysocket_core.lifecycle``). It has
        the steps the relay gives a target ``--open-timeout`` for (resolve a name never seen before,
        TCP, TLS, one request), so it gets as long; capped by the idle timeout, which bounds an
        unclaimed socket already. A browser later than that gets ``unknown_socket``: the client's
        close event (1006), not a hang."""
        return min(self.open_timeout_s, self.idle_timeout_s)

    @property
    def heartbeat_interval_s(self) -> float:
        """Three beats per TTL (at most one a second), so one lost beat never looks like a death."""
        return min(1.0, self.heartbeat_ttl_s / 3)
