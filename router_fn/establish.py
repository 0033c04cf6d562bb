"""Pick a relay node and have it open the WebSocket, by message passing on Redis."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from polysocket_core.control import (
    PICK_CHOICES,
    PICK_NODE_LUA,
    EstablishReply,
    EstablishRequest,
    Keys,
    pick_args,
    reservation_member,
)
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.ids import new_request_id, new_socket_id, new_uniq
from polysocket_core.redis_client import LONGEST_BLOCK_S
from polysocket_redis.pipelines import Pipelines, RedisPyPipelines, raise_errors

from .admission import Admitted

log = logging.getLogger("polysocket.router")

BLPOP_SLICE_S = LONGEST_BLOCK_S  # below every read timeout (redis_client.Patience), which also bounds a BLPOP
LIVENESS_SLICE_S = 0.5  # after a node took a request: how often its heartbeat is checked
# The BLPOP sent behind the pick waits this long at most: enough for a node that is not starved to
# open a loopback-near target and answer once (relay_node.control.agent: it acks first only an open
# slower than its ACK_AFTER_S, 20 ms), short enough that a pick that found no node (or a token at
# its limit) is answered this much later than with a pick alone.
PIPELINED_WAIT_S = 0.025


@dataclass(frozen=True, slots=True)
class Established:
    node_id: str
    fqdn: str  # "{uniq}.{node fqdn}"
    socket: str
    protocol: str
    idle_ms: int = 0  # the node's idle timeout (0: the node did not say)


ABANDON_KEEP_MS = 10_000  # the marker outlives the request's expiry by this much (clock skew)


class NodeLost(Exception):
    """The node took the request, then stopped heart-beating or ran out of its per-node time."""


class Establisher:
    """``node_timeout_s`` bounds the wait for one node, from the pick to its final answer (default:
    the 2 s ack timeout plus the relay's 10 s upstream open timeout). The request carries that
    bound as its ``expires_at_ms``, so a node that resumes later drops it (or closes the socket it
    opened too late). While a node that took the request works on it, its ``alive`` key is checked
    every ``LIVENESS_SLICE_S``: a node that stops heart-beating (frozen, killed, cut off) is given
    up on within its heartbeat TTL, and one other node is tried with the remaining budget."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, ack_timeout_s: float, establish_timeout_s: float,
                 node_timeout_s: float = 12.0, rng: random.Random | None = None,
                 pipelines: Pipelines | None = None):
        self.redis = redis
        self.pipelines = pipelines or RedisPyPipelines(redis)  # the pick; the router passes its direct ones
        self.keys = keys
        self.ack_timeout_s = ack_timeout_s
        self.establish_timeout_s = establish_timeout_s
        self.node_timeout_s = node_timeout_s
        self._pick = redis.register_script(PICK_NODE_LUA)
        # The replies can be awaited behind the pick only where a pipeline keeps its order: on one
        # connection. A cluster runs a pipeline's slots on their own nodes, side by side.
        self._wait_behind_pick = not isinstance(redis, RedisCluster)
        self.rng = rng or random.Random()  # the pick's choices (polysocket_core.control); a seed replays them

    async def pick_and_send(self, skip: list[str], admitted: Admitted, payload: bytes) -> tuple[str, str] | None:
        """The less loaded of a few live nodes drawn at random (polysocket_core.control): reserve the
        socket on it (and against the token's limit) and put the request in its inbox, in one atomic
        step."""
        keys, args = self._pick_args(skip, admitted, payload)
        return self._picked(await self._pick(keys=keys, args=args), admitted)

    async def pick_and_wait(self, skip: list[str], admitted: Admitted, payload: bytes,
                            reply_key: str) -> tuple[tuple[str, str] | None, list[EstablishReply]]:
        """:meth:`pick_and_send`, with a short BLPOP on the reply key behind it in the same round
        trip: a node that answers within ``PIPELINED_WAIT_S`` has done so by the time the pick's
        answer is read (its first reply: the ``done`` of a fast open, else an ``ack``; or none)."""
        keys, args = self._pick_args(skip, admitted, payload)
        picked, *popped = await self.pipelines.run(  # perf: replies-behind-pick
            [("EVALSHA", self._pick.sha, len(keys), *keys, *args), ("BLPOP", reply_key, PIPELINED_WAIT_S)],
            blocks=True)
        if isinstance(picked, NoScriptError):  # Redis restarted or flushed its scripts: nothing was sent
            return await self.pick_and_send(skip, admitted, payload), []
        if isinstance(picked, Exception):
            raise picked
        return self._picked(picked, admitted), [EstablishReply.decode(item[1]) for item in raise_errors(popped) if item]

    def _pick_args(self, skip: list[str], admitted: Admitted,
                   payload: bytes) -> tuple[list[str], list[str | int | bytes]]:
        draws = [self.rng.randrange(1 << 30) for _ in range(PICK_CHOICES)]
        return pick_args(self.keys, admitted.token_id, admitted.max_sockets, payload, draws, skip)

    @staticmethod
    def _picked(result: object, admitted: Admitted) -> tuple[str, str] | None:
        """The pick script's answer: (node id, fqdn), None when no node is left, or the token's limit."""
        if not result or not isinstance(result, list):
            return None
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in result]
        if values[0] == "limit":
            raise PolysocketError(
                ErrorCode.LIMIT_EXCEEDED,
                f"token holds {values[1]} sockets, its limit is {admitted.max_sockets}",
            )
        return values[1], values[2]

    async def establish(self, target: str, protocols: list[str], caller: str,
                        admitted: Admitted) -> Established:
        """Try the best node; if it does not take the request in time, withdraw it and try one other."""
        deadline = time.monotonic() + self.establish_timeout_s
        tried: list[str] = []
        failure = PolysocketError(ErrorCode.NO_RELAY, "no relay node available")
        try:
            for _attempt in range(2):
                if deadline - time.monotonic() <= 0:
                    break
                node_deadline = min(deadline, time.monotonic() + self.node_timeout_s)
                now_ms = int(time.time() * 1000)
                expires_at_ms = now_ms + int(max(0.0, node_deadline - time.monotonic()) * 1000)
                req = EstablishRequest(
                    id=new_request_id(),
                    socket=new_socket_id(),
                    target=target,
                    protocols=protocols,
                    expires_at_ms=expires_at_ms,
                    caller=caller,
                    meta=admitted.meta,
                    addresses=admitted.addresses,
                    token_id=admitted.token_id,
                    # Until the ack timeout this router gives up on a request the node has not acked
                    # only by taking it back from the inbox (LREM); a marker set sooner follows an ack,
                    # which the node sends after its check. So the node skips the check until then.
                    firm_until_ms=min(expires_at_ms, now_ms + int(self.ack_timeout_s * 1000)),
                )
                payload = req.encode()
                if self._wait_behind_pick:
                    picked, early = await self.pick_and_wait(tried, admitted, payload, self.keys.reply(req.id))
                else:
                    picked, early = await self.pick_and_send(tried, admitted, payload), None
                if picked is None:
                    break
                node_id, fqdn = picked
                tried.append(node_id)
                try:
                    reply = await self._await_reply(node_id, req.id, payload, admitted, node_deadline, early)
                except NodeLost as exc:
                    log.warning("node %s took establish request %s but %s; trying another", node_id, req.id, exc)
                    # The node may wake up before the request expires: tell it not to open it.
                    await self.redis.set(self.keys.abandoned(req.id), b"1",
                                         px=max(1, req.expires_at_ms - int(time.time() * 1000)) + ABANDON_KEEP_MS)
                    failure = PolysocketError(ErrorCode.TIMEOUT, "the relay node did not open the socket in time")
                    continue
                if reply is None:
                    log.warning("node %s did not take establish request; trying another", node_id)
                    failure = PolysocketError(ErrorCode.TIMEOUT, "no relay node answered in time")
                    continue
                if reply.ok:
                    return Established(node_id, f"{new_uniq()}.{fqdn}", req.socket, reply.protocol, reply.idle_ms)
                if reply.error in (ErrorCode.DRAINING.value, ErrorCode.NO_RELAY.value):
                    failure = PolysocketError(ErrorCode.NO_RELAY, "relay nodes are draining or full")
                    continue  # the node is shutting down or full: the other node may take it
                raise PolysocketError(_error_code(reply.error), reply.message or reply.error)
        except RedisError as exc:
            log.error("redis error during establish: %s", exc)
            raise PolysocketError(ErrorCode.NO_RELAY, "control plane unavailable") from None
        raise failure

    async def _await_reply(self, node_id: str, request_id: str, payload: bytes, admitted: Admitted,
                           deadline: float, early: list[EstablishReply] | None = None) -> EstablishReply | None:
        """The node's final reply; None if it never took the request (which is then withdrawn).
        Raises ``NodeLost`` if it took the request but did not answer by ``deadline`` or stopped
        heart-beating meanwhile. ``early``: the replies already popped behind the pick (which
        spent up to ``PIPELINED_WAIT_S`` of the ack's time)."""
        reply_key = self.keys.reply(request_id)
        if early:
            done = next((r for r in early if r.phase == "done"), None)
            return done or await self._reply_from_live_node(node_id, reply_key, deadline)
        waited = PIPELINED_WAIT_S if early is not None else 0.0
        ack = await self._next_reply(reply_key, min(self.ack_timeout_s - waited, deadline - time.monotonic()))
        if ack is None:
            if await self.redis.lrem(self.keys.inbox(node_id), 1, payload.decode()):
                # Still in the inbox: the node never saw it, and now never will. Give back the
                # reservation the pick made; the node would have done that had it taken the request.
                if admitted.token_id:
                    async with self.redis.pipeline(transaction=True) as p:
                        p.zrem(self.keys.reservations(admitted.token_id), request_id)
                        p.zrem(self.keys.node_reservations(node_id), reservation_member(admitted.token_id, request_id))
                        await p.execute()
                return None
            # The node took it just after the ack timeout: its answer is coming.
            ack = await self._reply_from_live_node(node_id, reply_key, deadline)
        if ack.phase == "done":
            return ack
        return await self._reply_from_live_node(node_id, reply_key, deadline)

    async def _reply_from_live_node(self, node_id: str, reply_key: str, deadline: float) -> EstablishReply:
        """The next reply from a node that took the request, checking between short waits that it
        is still alive."""
        alive_key = self.keys.alive(node_id)
        while (remaining := deadline - time.monotonic()) > 0:
            reply = await self._next_reply(reply_key, min(LIVENESS_SLICE_S, remaining))
            if reply is not None:
                return reply
            if not await self.redis.exists(alive_key):
                # A last look: the answer may have landed just before the heartbeat lapsed.
                item = await self.redis.lpop(reply_key)
                if isinstance(item, (bytes, str)):
                    return EstablishReply.decode(item)
                raise NodeLost("stopped heart-beating")
        raise NodeLost(f"did not answer within {self.node_timeout_s:g}s")

    async def _next_reply(self, key: str, timeout: float) -> EstablishReply | None:
        """BLPOP in slices shorter than the client's socket timeout, until ``timeout`` runs out."""
        end = time.monotonic() + timeout
        while (remaining := end - time.monotonic()) > 0:
            [item] = raise_errors(await self.pipelines.run(
                [("BLPOP", key, min(BLPOP_SLICE_S, max(remaining, 0.01)))], blocks=True))
            if item is not None:
                return EstablishReply.decode(item[1])
        return None


def _error_code(raw: str) -> ErrorCode:
    try:
        return ErrorCode(raw)
    except ValueError:
        return ErrorCode.UPSTREAM_FAILED
