"""Pick a relay node and have it open the WebSocket, by message passing on Redis."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from polysocket_core.control import PICK_NODE_LUA, EstablishReply, EstablishRequest, Keys
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.ids import new_request_id, new_socket_id, new_uniq

from .admission import Admitted

log = logging.getLogger("polysocket.router")


@dataclass(frozen=True, slots=True)
class Established:
    node_id: str
    fqdn: str  # "{uniq}.{node fqdn}"
    socket: str
    protocol: str


class Establisher:
    def __init__(self, redis: aioredis.Redis, keys: Keys, ack_timeout_s: float, establish_timeout_s: float):
        self.redis = redis
        self.keys = keys
        self.ack_timeout_s = ack_timeout_s
        self.establish_timeout_s = establish_timeout_s
        self._pick = redis.register_script(PICK_NODE_LUA)

    async def pick_node(self, skip: list[str], admitted: Admitted) -> tuple[str, str] | None:
        """Least-loaded live node, reserving the socket on it (and against the token's limit)."""
        result = await self._pick(keys=[self.keys.nodes], args=[
            self.keys.prefix, admitted.token_id, admitted.max_sockets, *skip])
        if not result:
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
        """Try the best node; if it does not take the request in time, try one other node."""
        deadline = time.monotonic() + self.establish_timeout_s
        tried: list[str] = []
        failure = PolysocketError(ErrorCode.NO_RELAY, "no relay node available")
        try:
            for _attempt in range(2):
                picked = await self.pick_node(tried, admitted)
                if picked is None:
                    break
                node_id, fqdn = picked
                tried.append(node_id)
                outcome = await self._ask(node_id, target, protocols, caller, admitted, deadline)
                if outcome is None:
                    log.warning("node %s did not take establish request; trying another", node_id)
                    failure = PolysocketError(ErrorCode.TIMEOUT, "no relay node answered in time")
                    continue
                socket_id, reply = outcome
                if reply.ok:
                    return Established(node_id, f"{new_uniq()}.{fqdn}", socket_id, reply.protocol)
                if reply.error in (ErrorCode.DRAINING.value, ErrorCode.NO_RELAY.value):
                    failure = PolysocketError(ErrorCode.NO_RELAY, "relay nodes are draining or full")
                    continue  # the node is shutting down or full: the other node may take it
                raise PolysocketError(_error_code(reply.error), reply.message or reply.error)
        except RedisError as exc:
            log.error("redis error during establish: %s", exc)
            raise PolysocketError(ErrorCode.NO_RELAY, "control plane unavailable") from None
        raise failure

    async def _ask(self, node_id: str, target: str, protocols: list[str], caller: str,
                   admitted: Admitted, deadline: float) -> tuple[str, EstablishReply] | None:
        req = EstablishRequest(
            id=new_request_id(),
            socket=new_socket_id(),
            target=target,
            protocols=protocols,
            expires_at_ms=int((time.time() + max(0.0, deadline - time.monotonic())) * 1000),
            caller=caller,
            meta=admitted.meta,
            addresses=admitted.addresses,
        )
        reply_key = self.keys.reply(req.id)
        await self.redis.rpush(self.keys.inbox(node_id), req.encode())
        ack = await self._next_reply(reply_key, min(self.ack_timeout_s, deadline - time.monotonic()))
        if ack is None:
            return None
        if ack.phase == "done":
            return req.socket, ack
        done = await self._next_reply(reply_key, deadline - time.monotonic())
        if done is None:
            raise PolysocketError(ErrorCode.TIMEOUT, "the relay node did not open the socket in time")
        return req.socket, done

    async def _next_reply(self, key: str, timeout: float) -> EstablishReply | None:
        if timeout <= 0:
            return None
        item = await self.redis.blpop([key], timeout=timeout)
        if item is None:
            return None
        return EstablishReply.decode(item[1])


def _error_code(raw: str) -> ErrorCode:
    try:
        return ErrorCode(raw)
    except ValueError:
        return ErrorCode.UPSTREAM_FAILED
