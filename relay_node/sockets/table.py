"""The sockets a node holds: opening them upstream, finding them by id, sweeping idle ones."""

from __future__ import annotations

import asyncio
import logging
import time

from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from polysocket_core.control import EstablishRequest
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.lifecycle import CloseCause, SweepVerdict, claim_deadline
from polysocket_core.reservations import Reservation, TokenLedger

from ..metrics import RelayMetrics
from . import memory
from .deadlines import DueQueue
from .limits import SocketLimits
from .pressure import BufferBudget, budget_for, memory_limit
from .socket import RelaySocket, SocketState
from .upstream import Upstream, open_upstream

log = logging.getLogger("polysocket.relay")

USER_AGENT = "polysocket-relay/0.1 (+https://github.com/polysocket)"


class SocketTable:
    def __init__(self, config: SocketLimits, metrics: RelayMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.sockets: dict[str, RelaySocket] = {}
        self.establishing = 0
        # Every token reservation this node holds (requests being opened and sockets), published as
        # absolute counts by the agent's heartbeat.
        self.ledger = TokenLedger()
        # When the sweep must look at each socket next: an idle node's sweep costs
        # what is due, not what it holds.
        self.due: DueQueue[str] = DueQueue()  # by socket id: a freed socket is not kept
        # What all sockets hold for their clients, against --buffer-budget ('auto': from the memory limit)
        limit = memory_limit() if config.buffer_budget_bytes is None else None
        budget = budget_for(config.buffer_budget_bytes, limit)
        self.budget = BufferBudget(budget, config.capacity)
        metrics.budget.set(self.budget.budget if budget is not None else 0)
        if budget is None:
            log.warning("no buffer budget: the memory this relay may use is unknown (set --buffer-budget)")
        else:
            log.info("buffer budget %d bytes (%s); once reached, a socket holds at most its share, %d bytes", budget,
                     "--buffer-budget" if limit is None else f"auto: a quarter of {limit} bytes of memory",
                     self.budget.share)

    def __len__(self) -> int:
        return len(self.sockets)

    @property
    def load(self) -> int:
        """Sockets held plus sockets being opened: what the node reports as its ``sockets``."""
        return len(self.sockets) + self.establishing

    def get(self, sid: str) -> RelaySocket:
        """The socket a client request names (every endpoint finds it here, the one door of the
        claim): the first such request claims it (``polysocket_core.lifecycle``)."""
        sock = self.sockets.get(sid)
        if sock is None:
            raise PolysocketError(ErrorCode.UNKNOWN_SOCKET, "no such socket on this relay")
        if sock.claim_by is not None:
            sock.claim()
        return sock

    async def open(self, req: EstablishRequest, reservation: Reservation) -> RelaySocket:
        """Open the upstream WebSocket for ``req``; raise ``upstream_failed`` with the reason.

        On success the socket owns ``reservation`` (released when the socket is freed); on failure
        it is released here.

        ``req.addresses`` pins the TCP connection to the IPs the router's SSRF guard checked (tried
        in order), while the Host header and the TLS server name stay those of the target URL, so a
        second DNS answer cannot send the socket elsewhere.
        """
        sid = req.socket
        if sid in self.sockets or self.load >= self.config.capacity:
            reservation.release()
            if sid in self.sockets:
                raise PolysocketError(ErrorCode.BAD_REQUEST, "socket id already in use")
            raise PolysocketError(ErrorCode.NO_RELAY, "relay node is at capacity")
        self.establishing += 1
        conn: Upstream | None = None
        try:
            hosts: list[str | None] = list(req.addresses) or [None]
            for i, host in enumerate(hosts):
                try:
                    conn = await self._connect(req.target, req.protocols, req.meta, host)
                    break
                except OSError:
                    if i == len(hosts) - 1:
                        raise
        except TimeoutError:
            raise PolysocketError(ErrorCode.UPSTREAM_FAILED, "timed out opening the WebSocket") from None
        # one name per clause: compiled by mypyc, a name shared by clauses keeps the first's type
        except InvalidStatus as refused:
            raise PolysocketError(
                ErrorCode.UPSTREAM_FAILED,
                f"target refused the WebSocket handshake with HTTP {refused.response.status_code}",
            ) from None
        except (InvalidHandshake, InvalidURI) as bad_handshake:
            raise PolysocketError(ErrorCode.UPSTREAM_FAILED, f"handshake failed: {bad_handshake}") from None
        except OSError as unreachable:
            raise PolysocketError(
                ErrorCode.UPSTREAM_FAILED, f"cannot connect to target: {unreachable.strerror or unreachable}"
            ) from None
        except ValueError as refused_redirect:  # e.g. a redirect to another origin, refused while the address is pinned
            raise PolysocketError(ErrorCode.UPSTREAM_FAILED, f"handshake failed: {refused_redirect}") from None
        finally:
            self.establishing -= 1
            if conn is None:
                reservation.release()
        assert conn is not None
        # Until a browser names it, the socket is the router's to hand on: if the router died
        # meanwhile, the claim deadline frees it (polysocket_core.lifecycle).
        claim_by = claim_deadline(time.monotonic(), req.expires_at_ms / 1000 - time.time(),
                                  self.config.claim_margin_s, self.config.idle_timeout_s)
        sock = RelaySocket(sid, conn, self.config, self.metrics, self._drop, reservation, req.meta, claim_by,
                           self.due.schedule, self.budget)
        self.sockets[sid] = sock
        self.due.schedule(sid, sock.next_due(sock.last_seen))
        self.metrics.open_sockets.set(len(self.sockets))
        self.metrics.sockets_total.inc()
        return sock

    async def _connect(self, target: str, protocols: list[str], meta: dict[str, str],
                       host: str | None) -> Upstream:
        cfg = self.config
        # No compression: per-socket zlib state costs ~100s of KiB, and frames are re-encoded anyway.
        return await open_upstream(
            target, host=host, subprotocols=protocols, origin=meta.get("origin") or None,
            user_agent=USER_AGENT, max_size=cfg.max_message_bytes, open_timeout=cfg.open_timeout_s,
            close_timeout=cfg.close_timeout_s)

    def _drop(self, sock: RelaySocket) -> None:
        """The socket was freed: out of the table (its reservation is already released)."""
        self.due.discard(sock.id)
        if self.sockets.get(sock.id) is sock:
            del self.sockets[sock.id]
            self.metrics.open_sockets.set(len(self.sockets))

    def forget(self, sock: RelaySocket) -> None:
        """Free the socket now (its close, if any, finishes on its own)."""
        sock.free()

    def kill_token(self, token_id: str, reason: str) -> int:
        """Close every socket opened with this token (policy violation, 1008)."""
        victims = [s for s in self.sockets.values() if s.token_id == token_id]
        for sock in victims:
            sock.close(CloseCause.KILL, reason=reason)
        return len(victims)

    def sweep(self, now: float | None = None) -> None:
        """Free sockets left alone too long; fail sockets whose send gap was never filled, whose
        target stopped reading or stopped answering pings; ping the others when due (one sweep
        for every socket's keepalive, rather than a task per connection). Only the sockets due
        by ``now`` are visited (``RelaySocket.next_due``); each goes back under its next time."""
        now = time.monotonic() if now is None else now
        self.metrics.buffered.set(self.budget.held)
        cfg = self.config
        stall_limit = cfg.ping_timeout_s
        sockets, due, checks = self.sockets, self.due, self.metrics.socket_checks
        for sid in due.pop_due(now):  # perf: due-sweep
            sock = sockets.get(sid)
            if sock is None:
                continue  # freed meanwhile
            checks.value += 1
            self._check(sock, now, stall_limit)
            if sockets.get(sid) is sock:
                due.schedule(sid, sock.next_due(now))

    def _check(self, sock: RelaySocket, now: float, stall_limit: float | None) -> None:
        """The sweep's checks on one due socket, the first that applies acts."""
        cfg = self.config
        quiet = now - sock.last_seen
        verdict = sock.sweep(now)
        if verdict is SweepVerdict.UNCLAIMED:
            log.info("socket %s: no client request named it by its claim deadline (its router gave up "
                     "or died mid-connect), closed with 1001 and freed", sock.id[:8])
        elif verdict is SweepVerdict.IDLE:
            log.info("socket %s: idle for %.0fs, closed with 1001 and freed", sock.id[:8], quiet)
        elif verdict is SweepVerdict.UNCOLLECTED:
            log.info("socket %s: closed, its close message not collected for %.0fs, freed", sock.id[:8], quiet)
        elif sock.state is SocketState.OPEN and sock.inbound.gap_expired(now, cfg.gap_hold_s):
            missing = sock.inbound.missing_seq
            log.info("socket %s: send %d missing for %.0fs, failing", sock.id[:8], missing, cfg.gap_hold_s)
            sock.close(CloseCause.GAP, reason=f"sequence gap: send {missing} never arrived")
        elif stall_limit is not None and sock.write_stalled(now, stall_limit):
            # A target that takes no bytes for as long as a ping may go unanswered is as dead as
            # one that does not answer pings; its sends would otherwise wait forever.
            log.info("socket %s: the target took no data for %.0fs, failing", sock.id[:8], stall_limit)
            sock.fail_stalled()
        elif sock.keepalive(now):
            log.info("socket %s: the target answered no ping for %.0fs, failing", sock.id[:8],
                     cfg.ping_timeout_s)

    async def close_all(self, code: int, reason: str) -> None:
        """Drain: close every socket with 1001 (``code`` is kept for callers; the drain decides it)."""
        for sock in list(self.sockets.values()):
            sock.close(CloseCause.DRAIN, code, reason)

    def abort_all(self) -> None:
        for sock in list(self.sockets.values()):
            sock.abort()

    async def run_sweeper(self) -> None:
        """Once per sweep interval: free what was left alone, then give freed memory back."""
        memory.configure()
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                self.sweep()
                memory.trimmer.maybe_trim()
            except Exception:
                log.exception("sweep failed")
