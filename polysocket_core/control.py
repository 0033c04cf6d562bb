"""Control-plane schema on Redis: key names, node records, establish messages, node selection script.

The router and the relay talk only through these keys (message passing on Redis lists, no HTTP
between them), so this module is the whole contract; docs/protocol.md describes it for operators.

Keys (``P`` is the prefix, ``ps:`` by default):

- ``P nodes``              SET of node ids that registered
- ``P node:{id}``          HASH id, fqdn, capacity, sockets, draining ("0"/"1"), started_at
- ``P node:{id}:alive``    STRING with a TTL, refreshed by the node's heartbeat; gone = node dead
- ``P node:{id}:inbox``    LIST of establish requests (JSON), BLPOP-ed by the node
- ``P node:{id}:tokens``   HASH token id -> sockets the node holds or is opening for it (absolute,
                           rewritten by every heartbeat)
- ``P node:{id}:resv:{token id}`` ZSET establish request id -> expiry (ms): the token's reservations
                           picked for the node and not yet settled by its heartbeat
- ``P reply:{request_id}`` LIST of replies (JSON) to one request: an ``ack`` then a ``done``
- ``P token:{sha256}``     HASH of one token (see router_fn.tokens); ``P tokens`` HASH id -> sha256
- ``P rl:{kind}:{key}:{window}`` connect rate-limit counters
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

DEFAULT_PREFIX = "ps:"
NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
REPLY_TTL_SECONDS = 60
# A picked reservation counts until the node that took the request settles it with its heartbeat;
# if none does (request lost, node dead), it expires this long after the request itself.
RESERVATION_GRACE_MS = 10_000


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def alive(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}:alive"

    def inbox(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}:inbox"

    def node_tokens(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}:tokens"

    def reservations(self, node_id: str, token_id: str) -> str:
        return f"{self.prefix}node:{node_id}:resv:{token_id}"

    def reply(self, request_id: str) -> str:
        return f"{self.prefix}reply:{request_id}"

    def abandoned(self, request_id: str) -> str:
        """Set by a router that gave up on a node which took the request (frozen, too slow): the node
        must not open the socket, or must close it if it already did."""
        return f"{self.prefix}abandoned:{request_id}"

    def token(self, digest: str) -> str:
        return f"{self.prefix}token:{digest}"

    @property
    def tokens(self) -> str:
        return f"{self.prefix}tokens"

    def rate(self, kind: str, key: str, window: int) -> str:
        return f"{self.prefix}rl:{kind}:{key}:{window}"


@dataclass(slots=True)
class EstablishRequest:
    """Router -> node: open a WebSocket to ``target`` and hold it as ``socket``."""

    id: str
    socket: str
    target: str
    protocols: list[str]
    expires_at_ms: int  # wall clock; the node ignores a request that arrives after this
    caller: str = ""
    meta: dict[str, str] = field(default_factory=dict)  # admission facts (caller, origin) for reporting
    addresses: list[str] = field(default_factory=list)  # IPs the SSRF guard checked: use only these
    token_id: str = ""  # the token whose limit the socket counts against ("" = none)

    def encode(self) -> bytes:
        return orjson.dumps({"v": 1, "op": "establish", **asdict(self)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EstablishRequest:
        return cls(
            id=str(data["id"]),
            socket=str(data["socket"]),
            target=str(data["target"]),
            protocols=[str(p) for p in data.get("protocols", [])],
            expires_at_ms=int(data["expires_at_ms"]),
            caller=str(data.get("caller", "")),
            meta={str(k): str(v) for k, v in dict(data.get("meta", {})).items()},
            addresses=[str(a) for a in data.get("addresses", [])],
            # routers before the typed field sent the token id in ``meta`` only
            token_id=str(data.get("token_id") or dict(data.get("meta", {})).get("token", "")),
        )


@dataclass(frozen=True, slots=True)
class KillRequest:
    """Router/CLI -> every node: close the sockets of a revoked token (policy violation, 1008)."""

    token_id: str
    reason: str = "token revoked"

    def encode(self) -> bytes:
        return orjson.dumps({"v": 1, "op": "kill", "token_id": self.token_id, "reason": self.reason})


def decode_inbox(raw: bytes | str) -> EstablishRequest | KillRequest:
    """Decode one node-inbox message; ValueError/KeyError/TypeError on anything malformed."""
    data: dict[str, Any] = orjson.loads(raw)
    if data.get("v") != 1:
        raise ValueError(f"unsupported inbox message version: {data.get('v')!r}")
    op = data.get("op", "establish")
    if op == "establish":
        return EstablishRequest.from_dict(data)
    if op == "kill":
        return KillRequest(token_id=str(data["token_id"]), reason=str(data.get("reason", "token revoked")))
    raise ValueError(f"unknown inbox op: {op!r}")


@dataclass(frozen=True, slots=True)
class EstablishReply:
    """Node -> router. ``phase`` is ``ack`` (request taken) or ``done`` (outcome known)."""

    phase: str
    ok: bool = True
    protocol: str = ""
    error: str = ""
    message: str = ""
    idle_ms: int = 0  # a successful ``done``: the node's idle timeout (0: not told, from older nodes)

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> EstablishReply:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(
            phase=str(data["phase"]),
            ok=bool(data.get("ok", True)),
            protocol=str(data.get("protocol", "")),
            error=str(data.get("error", "")),
            message=str(data.get("message", "")),
            idle_ms=int(data.get("idle_ms", 0)),
        )


# Pick the live, non-draining node with the lowest sockets/capacity and count the new socket on it,
# in one atomic step so that concurrent connects spread out. With a token, first count the token's
# sockets on the live nodes (dead nodes stop counting when their alive key expires): the absolute
# count each node published plus its reservations in flight (``node:{id}:resv:{token}``, expired
# ones dropped), and refuse at the limit; else add this request to the chosen node's reservations,
# scored with its expiry. Records of
# dead nodes are pruned. The establish request is pushed to the chosen node's inbox in the same step,
# so a reservation never exists without its request (a router that dies in between cannot leak it).
# KEYS[1] = nodes set. ARGV[1] = key prefix, ARGV[2] = token id ("" = none), ARGV[3] = max sockets
# (0 = no limit), ARGV[4] = the encoded request, ARGV[5..] = node ids to skip (a retry).
# Returns {"ok", node_id, fqdn}, {"limit", count} or nil (no node).
PICK_NODE_LUA = """
local prefix, token, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local skip = {}
for i = 5, #ARGV do skip[ARGV[i]] = true end
local best, best_load, best_fqdn = nil, nil, nil
local used = 0
local now_ms = 0
if token ~= '' then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local nk = prefix .. 'node:' .. id
  if redis.call('EXISTS', nk .. ':alive') == 1 then
    if token ~= '' then
      local rk = nk .. ':resv:' .. token
      redis.call('ZREMRANGEBYSCORE', rk, '-inf', now_ms)
      used = used + math.max(0, tonumber(redis.call('HGET', nk .. ':tokens', token)) or 0)
        + redis.call('ZCARD', rk)
    end
    if not skip[id] then
      local f = redis.call('HMGET', nk, 'fqdn', 'capacity', 'sockets', 'draining')
      local cap = tonumber(f[2]) or 0
      local n = tonumber(f[3]) or 0
      if f[1] and f[4] ~= '1' and cap > 0 and n < cap then
        local load = n / cap
        if best == nil or load < best_load then
          best, best_load, best_fqdn = id, load, f[1]
        end
      end
    end
  elseif redis.call('EXISTS', nk) == 0 then
    redis.call('SREM', KEYS[1], id)
    redis.call('DEL', nk .. ':tokens', nk .. ':inbox')
  end
end
if token ~= '' and limit > 0 and used >= limit then return {'limit', tostring(used)} end
if best == nil then return nil end
redis.call('HINCRBY', prefix .. 'node:' .. best, 'sockets', 1)
if token ~= '' then
  local rk = prefix .. 'node:' .. best .. ':resv:' .. token
  local req = cjson.decode(ARGV[4])
  local expiry = tonumber(req['expires_at_ms']) + """ + str(RESERVATION_GRACE_MS) + """
  redis.call('ZADD', rk, expiry, req['id'])
  redis.call('PEXPIREAT', rk, math.max(expiry, tonumber(redis.call('PEXPIRETIME', rk))))
end
redis.call('RPUSH', prefix .. 'node:' .. best .. ':inbox', ARGV[4])
return {'ok', best, best_fqdn}
"""
