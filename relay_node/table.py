"""The sockets a node holds: opening them upstream, finding them by id, sweeping idle ones."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from polysocket_core import wire
from polysocket_core.errors import ErrorCode, PolysocketError

from .config import RelayConfig
from .metrics import RelayMetrics
from .session import RelaySocket

log = logging.getLogger("polysocket.relay")

USER_AGENT = "polysocket-relay/0.1 (+https://github.com/polysocket)"


class SocketTable:
    def __init__(self, config: RelayConfig, metrics: RelayMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.sockets: dict[str, RelaySocket] = {}
        self.establishing = 0
        self.per_token: collections.Counter[str] = collections.Counter()  # held + being opened
        # Token reservations the router made in Redis that this node has since given back (socket
        # freed, open failed, request expired); the agent subtracts them with the next heartbeat.
        self.released: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self.sockets)

    @property
    def load(self) -> int:
        """Sockets held plus sockets being opened: what the node reports as its ``sockets``."""
        return len(self.sockets) + self.establishing

    def get(self, sid: str) -> RelaySocket:
        sock = self.sockets.get(sid)
        if sock is None:
            raise PolysocketError(ErrorCode.UNKNOWN_SOCKET, "no such socket on this relay")
        return sock

    async def open(self, sid: str, target: str, protocols: list[str], meta: dict[str, str],
                   addresses: list[str] | None = None) -> RelaySocket:
        """Open the upstream WebSocket; raise ``upstream_failed`` with the reason.

        ``addresses`` pins the TCP connection to the IPs the router's SSRF guard checked (tried in
        order), while the Host header and the TLS server name stay those of the target URL, so a
        second DNS answer cannot send the socket elsewhere.
        """
        token = meta.get("token", "")
        if sid in self.sockets or self.load >= self.config.capacity:
            self.release(token)
            if sid in self.sockets:
                raise PolysocketError(ErrorCode.BAD_REQUEST, "socket id already in use")
            raise PolysocketError(ErrorCode.NO_RELAY, "relay node is at capacity")
        self.establishing += 1
        self.per_token[token] += 1
        conn: ClientConnection | None = None
        try:
            hosts: list[str | None] = list(addresses or []) or [None]
            for i, host in enumerate(hosts):
                try:
                    conn = await self._connect(target, protocols, meta, host)
                    break
                except OSError:
                    if i == len(hosts) - 1:
                        raise
        except TimeoutError:
            raise PolysocketError(ErrorCode.UPSTREAM_FAILED, "timed out opening the WebSocket") from None
        except InvalidStatus as exc:
            raise PolysocketError(
                ErrorCode.UPSTREAM_FAILED,
                f"target refused the WebSocket handshake with HTTP {exc.response.status_code}",
            ) from None
        except (InvalidHandshake, InvalidURI) as exc:
            raise PolysocketError(ErrorCode.UPSTREAM_FAILED, f"handshake failed: {exc}") from None
        except OSError as exc:
            raise PolysocketError(
                ErrorCode.UPSTREAM_FAILED, f"cannot connect to target: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:  # e.g. a redirect to another origin, refused while the address is pinned
            raise PolysocketError(ErrorCode.UPSTREAM_FAILED, f"handshake failed: {exc}") from None
        finally:
            self.establishing -= 1
            if conn is None:
                self._uncount(token)
        assert conn is not None
        sock = RelaySocket(sid, conn, self.config, self.metrics, self.forget, meta)
        self.sockets[sid] = sock
        self.metrics.open_sockets.set(len(self.sockets))
        self.metrics.sockets_total.inc()
        return sock

    async def _connect(self, target: str, protocols: list[str], meta: dict[str, str],
                       host: str | None) -> ClientConnection:
        cfg = self.config
        pin: dict[str, Any] = {}
        if host is not None:
            pin["host"] = host
            if target.startswith("wss:"):
                pin["server_hostname"] = urlsplit(target).hostname
        return await connect(
            target,
            subprotocols=[websockets.Subprotocol(p) for p in protocols] or None,
            origin=websockets.Origin(meta["origin"]) if meta.get("origin") else None,
            compression=None,  # per-socket zlib state costs ~100s of KiB; frames are re-encoded anyway
            proxy=None,
            open_timeout=cfg.open_timeout_s,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s,
            close_timeout=cfg.close_timeout_s,
            max_size=cfg.max_message_bytes,
            max_queue=4,
            user_agent_header=USER_AGENT,
            **pin,
        )

    def _uncount(self, token: str) -> None:
        self.per_token[token] -= 1
        if self.per_token[token] <= 0:
            del self.per_token[token]
        self.release(token)

    def release(self, token: str) -> None:
        """Give back one reservation of ``token`` (made by the router's pick script)."""
        if token:
            self.released[token] += 1

    def forget(self, sock: RelaySocket) -> None:
        """Drop the socket from the table (its close, if any, finishes on its own)."""
        if self.sockets.get(sock.id) is sock:
            del self.sockets[sock.id]
            self._uncount(sock.meta.get("token", ""))
            self.metrics.open_sockets.set(len(self.sockets))

    def take_released(self) -> dict[str, int]:
        """The reservations to subtract in Redis now (the caller puts them back if that fails)."""
        out = dict(self.released)
        self.released.clear()
        return out

    def kill_token(self, token_id: str, reason: str) -> int:
        """Close every socket opened with this token (policy violation, 1008)."""
        victims = [s for s in self.sockets.values() if s.meta.get("token") == token_id]
        for sock in victims:
            sock.close_upstream(wire.CLOSE_POLICY, reason, fail=True)
        return len(victims)

    def sweep(self, now: float | None = None) -> None:
        """Close idle sockets and sockets whose send gap was never filled."""
        now = time.monotonic() if now is None else now
        cfg = self.config
        for sock in list(self.sockets.values()):
            if sock.is_idle(now):
                log.info("socket %s: idle for %.0fs, closing", sock.id[:8], cfg.idle_timeout_s)
                sock.close_upstream(wire.CLOSE_GOING_AWAY, "idle timeout")
                self.forget(sock)
            elif sock.inbound.gap_expired(now, cfg.gap_hold_s) and not sock.closing:
                missing = sock.inbound.missing_seq
                log.info("socket %s: send %d missing for %.0fs, failing", sock.id[:8], missing, cfg.gap_hold_s)
                sock.close_upstream(
                    wire.CLOSE_INTERNAL, f"sequence gap: send {missing} never arrived", fail=True
                )

    async def close_all(self, code: int, reason: str) -> None:
        for sock in list(self.sockets.values()):
            sock.close_upstream(code, reason)

    def abort_all(self) -> None:
        for sock in list(self.sockets.values()):
            sock.abort()
            self.forget(sock)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")
