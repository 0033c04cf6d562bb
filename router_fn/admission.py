"""Who may open which socket. ``/connect`` calls ``admit`` before it picks a node.

``TokenAdmission`` applies, in order, each with its own error code: token known, not revoked, not
expired (``unauthorized``); origin allowed (``forbidden_origin``); target allowed by the token's
patterns (``forbidden_target``); connect rate per client address and per token (``rate_limited``,
before the DNS lookup so the guard is no free resolver; counted in the round trip that looks the
token up, so every attempt counts, refused or not); SSRF guard (``blocked_target``). The
token's concurrent-socket limit (``limit_exceeded``) is checked by the node-pick script in Redis,
atomically with the reservation of the new socket. ``OpenAdmission`` admits everything and exists
for explicitly opted-in local experiments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_core.wire import ConnectParams
from polysocket_redis.pipelines import Pipelines, RedisPyPipelines, raise_errors

from .policy import origin_allowed, target_allowed
from .ratelimit import RateLimiter
from .ssrf import IPNetwork, Resolver, check_target, system_resolve
from .tokens import TokenStore, token_id_of


@dataclass(frozen=True, slots=True)
class ConnectContext:
    """What the router knows about the caller besides the query parameters."""

    client_ip: str
    origin: str | None  # Origin header, else the origin of Referer, else None
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Admitted:
    meta: dict[str, str] = field(default_factory=dict)  # recorded on the socket (token id, origin, ...)
    addresses: list[str] = field(default_factory=list)  # checked IPs the relay must use ([] = resolve)
    token_id: str = ""  # counted against max_sockets
    max_sockets: int = 0  # 0 = no limit


class Admission(Protocol):
    async def admit(self, params: ConnectParams, ctx: ConnectContext) -> Admitted:
        """Return the facts to record on the socket, or raise a ``PolysocketError``."""
        ...


def _meta(params: ConnectParams, ctx: ConnectContext) -> dict[str, str]:
    meta = {"caller": params.caller}
    if ctx.origin:
        meta["origin"] = ctx.origin
    return meta


class OpenAdmission:
    """Admits everything that parsed, with no SSRF guard: never expose it beyond loopback."""

    async def admit(self, params: ConnectParams, ctx: ConnectContext) -> Admitted:
        return Admitted(_meta(params, ctx))


class TokenAdmission:
    def __init__(self, tokens: TokenStore, limiter: RateLimiter, allow_cidrs: list[IPNetwork],
                 resolve: Resolver = system_resolve, pipelines: Pipelines | None = None) -> None:
        self.tokens = tokens
        self.limiter = limiter
        self.allow_cidrs = allow_cidrs
        self.resolve = resolve
        self.pipelines = pipelines or RedisPyPipelines(tokens.redis)  # the router passes its direct ones

    async def admit(self, params: ConnectParams, ctx: ConnectContext) -> Admitted:
        if not params.token:
            raise PolysocketError(ErrorCode.UNAUTHORIZED, "a token is required")
        # perf: one-trip-admission
        # One round trip looks the token up and counts the attempt: so an attempt is counted even
        # when a check below refuses it, which only tightens the limits.
        counters, counted = self.limiter.count(ctx.client_ip, token_id_of(params.token))
        results = raise_errors(await self.pipelines.run([self.tokens.lookup_command(params.token), *counters]))
        record = self.tokens.record_of(results[0])
        if record is None:
            raise PolysocketError(ErrorCode.UNAUTHORIZED, "unknown token")
        status = record.status(time.time())
        if status != "active":
            raise PolysocketError(ErrorCode.UNAUTHORIZED, f"token is {status}")
        if not origin_allowed(record.origins, ctx.origin):
            shown = ctx.origin or "no Origin or Referer"
            raise PolysocketError(ErrorCode.FORBIDDEN_ORIGIN, f"origin not allowed for this token: {shown}")
        if not target_allowed(record.targets, params.target):
            raise PolysocketError(ErrorCode.FORBIDDEN_TARGET, "target not allowed for this token")
        # Rate limit before the DNS lookup, so the guard cannot be used as a free resolver.
        self.limiter.verdict(counted, results[1:])
        addresses = await check_target(params.target, self.allow_cidrs, self.resolve)
        meta = _meta(params, ctx)
        meta["token"] = record.id
        return Admitted(meta, addresses=addresses, token_id=record.id, max_sockets=record.max_sockets)
