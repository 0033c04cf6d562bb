"""Operator-issued tokens, stored in Redis by SHA-256 digest only: the clear token is shown once.

A token says which origins may use it, which targets it may open, how many sockets it may hold at
once, and until when. Revoked tokens stay listed (as revoked) so their history remains readable.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from polysocket_core.control import Keys, KillRequest

from .policy import TargetPattern, validate_origin_pattern

TOKEN_PREFIX = "pst_"
MIN_TOKEN_LENGTH = 16


def check_token_value(token: str) -> str:
    """A fixed token value (``polysocket dev --dev-token``) must be as hard to guess as a short password."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"a token must be at least {MIN_TOKEN_LENGTH} characters")
    return token


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id_of(token: str) -> str:
    """The public handle of a token: the first 12 hex digits of its digest."""
    return digest(token)[:12]


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(slots=True)
class TokenRecord:
    id: str
    origins: list[str]
    targets: list[str]
    max_sockets: int
    label: str = ""
    created_at: int = field(default_factory=lambda: int(time.time()))
    expires_at: int = 0  # unix seconds; 0 = never
    revoked: bool = False

    def to_redis(self) -> dict[str, str]:
        return {
            "id": self.id,
            "origins": orjson.dumps(self.origins).decode(),
            "targets": orjson.dumps(self.targets).decode(),
            "max_sockets": str(self.max_sockets),
            "label": self.label,
            "created_at": str(self.created_at),
            "expires_at": str(self.expires_at),
            "revoked": "1" if self.revoked else "0",
        }

    @classmethod
    def from_redis(cls, raw: dict[Any, Any]) -> TokenRecord:
        d = {_s(k): _s(v) for k, v in raw.items()}
        return cls(
            id=d["id"],
            origins=list(orjson.loads(d["origins"])),
            targets=list(orjson.loads(d["targets"])),
            max_sockets=int(d["max_sockets"]),
            label=d.get("label", ""),
            created_at=int(d.get("created_at", "0")),
            expires_at=int(d.get("expires_at", "0")),
            revoked=d.get("revoked") == "1",
        )

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.revoked:
            return "revoked"
        if self.expires_at and now >= self.expires_at:
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "origins": self.origins, "targets": self.targets,
                "max_sockets": self.max_sockets, "created_at": self.created_at,
                "expires_at": self.expires_at or None, "status": self.status()}


# Every field TokenRecord.to_redis writes, in its order; the id first (a record without one is none).
RECORD_FIELDS = ("id", "origins", "targets", "max_sockets", "label", "created_at", "expires_at", "revoked")


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_duration(raw: str) -> int:
    """``30d``, ``12h``, ``15m``, ``90s`` or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    raw = raw.strip().lower()
    try:
        value = int(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else int(raw)
    except ValueError:
        raise ValueError(f"not a duration: {raw!r} (use e.g. 30d, 12h, 15m, 90s)") from None
    if value <= 0:
        raise ValueError("duration must be positive")
    return value


class TokenStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def create(self, origins: list[str], targets: list[str], max_sockets: int, label: str = "",
                     expires_in: int | None = None, token: str | None = None) -> tuple[str, TokenRecord]:
        """Validate the patterns, store the digest, return the clear token (shown once) and record."""
        if not origins or not targets:
            raise ValueError("a token needs at least one --origin and one --target")
        if max_sockets <= 0:
            raise ValueError("--max-sockets must be positive")
        origins = [validate_origin_pattern(o) for o in origins]
        for t in targets:
            TargetPattern.parse(t)
        token = check_token_value(token) if token else new_token()
        record = TokenRecord(id=token_id_of(token), origins=origins, targets=targets,
                             max_sockets=max_sockets, label=label,
                             expires_at=int(time.time()) + expires_in if expires_in else 0)
        d = digest(token)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(self.keys.token(d))
            p.hset(self.keys.token(d), mapping=record.to_redis())  # type: ignore[arg-type]
            p.hset(self.keys.tokens, record.id, d)
            await p.execute()
        return token, record

    async def lookup(self, token: str) -> TokenRecord | None:
        return self.record(await self.redis.hgetall(self.keys.token(digest(token))))

    def lookup_command(self, token: str) -> tuple[str, ...]:
        """:meth:`lookup` as one command of a pipeline (polysocket_redis.pipelines); :meth:`record_of`
        reads its reply. ``HMGET`` of the record's fields: its reply needs no client-side callback."""
        return ("HMGET", self.keys.token(digest(token)), *RECORD_FIELDS)

    @staticmethod
    def record_of(values: list[Any]) -> TokenRecord | None:
        """The record from the reply to :meth:`lookup_command` (None: no such token)."""
        if not values or values[0] is None:
            return None
        return TokenRecord.from_redis({k: v for k, v in zip(RECORD_FIELDS, values, strict=True) if v is not None})

    @staticmethod
    def record(raw: dict[Any, Any]) -> TokenRecord | None:
        return TokenRecord.from_redis(raw) if raw else None

    async def get(self, token_id: str) -> TokenRecord | None:
        d = await self.redis.hget(self.keys.tokens, token_id)
        if d is None:
            return None
        raw = await self.redis.hgetall(self.keys.token(_s(d)))
        return TokenRecord.from_redis(raw) if raw else None

    async def list(self) -> list[TokenRecord]:
        records = []
        for _, d in sorted((await self.redis.hgetall(self.keys.tokens)).items()):
            raw = await self.redis.hgetall(self.keys.token(_s(d)))
            if raw:
                records.append(TokenRecord.from_redis(raw))
        return sorted(records, key=lambda r: r.created_at)

    async def revoke(self, token_id: str, kill: bool = False) -> TokenRecord | None:
        d = await self.redis.hget(self.keys.tokens, token_id)
        if d is None:
            return None
        await self.redis.hset(self.keys.token(_s(d)), "revoked", "1")
        if kill:
            await self.kill(token_id)
        return await self.get(token_id)

    async def kill(self, token_id: str) -> int:
        """Ask every registered node to close the token's sockets; returns how many were asked."""
        nodes = [_s(n) for n in await self.redis.smembers(self.keys.nodes)]
        msg = KillRequest(token_id).encode()
        for node in nodes:
            await self.redis.rpush(self.keys.inbox(node), msg)
        return len(nodes)

    async def migrate_legacy(self) -> int:
        """Move the records a version before the hash tags wrote (``Keys.legacy_token``) under the
        tag, where the router looks tokens up; how many moved. Every ``polysocket token`` command
        runs it first, so one after an upgrade moves them all (docs/protocol.md)."""
        moved = 0
        for token_id, d in (await self.redis.hgetall(self.keys.legacy_tokens)).items():
            raw = await self.redis.hgetall(self.keys.legacy_token(_s(d)))
            if raw and not await self.redis.exists(self.keys.token(_s(d))):  # a rerun keeps what changed since
                async with self.redis.pipeline(transaction=True) as p:  # one slot: the tokens' tag
                    p.hset(self.keys.token(_s(d)), mapping={_s(k): _s(v) for k, v in raw.items()})
                    p.hset(self.keys.tokens, _s(token_id), _s(d))
                    await p.execute()
                moved += 1
            await self.redis.delete(self.keys.legacy_token(_s(d)))
            await self.redis.hdel(self.keys.legacy_tokens, token_id)
        return moved

    async def sockets_in_use(self, token_id: str) -> int:
        """The sockets the live nodes published for the token with their last heartbeats."""
        return int(await self.redis.hget(self.keys.used, token_id) or 0)
