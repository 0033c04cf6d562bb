"""Fixed-window connect rate limits in Redis (per client IP and per token): cheap, shared by all
router instances, and self-cleaning through key expiry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from polysocket_core.control import Keys
from polysocket_core.errors import ErrorCode, PolysocketError
from polysocket_redis.pipelines import Command, RedisPyPipelines, raise_errors


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    seconds: int

    @classmethod
    def parse(cls, raw: str) -> Rate:
        """``N/SECONDS``, e.g. ``120/60``; ``0/1`` disables the limit."""
        try:
            count, seconds = (int(x) for x in raw.split("/", 1))
        except ValueError:
            raise ValueError(f"rate must look like N/SECONDS, got {raw!r}") from None
        if count < 0 or seconds <= 0:
            raise ValueError(f"rate must have N >= 0 and SECONDS > 0, got {raw!r}")
        return cls(count, seconds)

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}"


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, keys: Keys, per_ip: Rate, per_token: Rate) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = {"ip": per_ip, "token": per_token}

    def count(self, ip: str, token_id: str) -> tuple[list[Command], list[tuple[str, Rate]]]:
        """One connect attempt's counters as commands of a pipeline (polysocket_redis.pipelines), and what
        :meth:`verdict` needs to judge their replies. Lets the admission count in the round trip
        that looks the token up."""
        now = time.time()
        checks = [(kind, self.limits[kind]) for kind, key in (("ip", ip), ("token", token_id))
                  if key and self.limits[kind].count > 0]
        commands: list[Command] = []
        for kind, rate in checks:
            k = self.keys.rate(kind, ip if kind == "ip" else token_id, int(now // rate.seconds))
            commands += [("INCR", k), ("EXPIRE", k, rate.seconds + 1)]
        return commands, checks

    @staticmethod
    def verdict(checks: list[tuple[str, Rate]], results: list[Any]) -> None:
        """Raise ``rate_limited`` when a window counted by :meth:`count` is over its limit;
        ``results`` are the pipeline's answers from the first counter on."""
        for i, (kind, rate) in enumerate(checks):
            if int(results[2 * i]) > rate.count:
                raise PolysocketError(
                    ErrorCode.RATE_LIMITED,
                    f"too many connects for this {'client address' if kind == 'ip' else 'token'}: "
                    f"at most {rate.count} per {rate.seconds}s",
                )

    async def hit(self, ip: str, token_id: str) -> None:
        """Count one connect attempt; raise ``rate_limited`` when a window is full."""
        commands, checks = self.count(ip, token_id)
        if not checks:
            return
        self.verdict(checks, raise_errors(await RedisPyPipelines(self.redis).run(commands)))
