"""Control-plane schema on Redis: key names, node records, establish messages, node selection script.

The router and the relay talk only through these keys (message passing on Redis lists, no HTTP
between them), so this module is the whole contract; docs/protocol.md describes it for operators.

Keys (``P`` is the prefix, ``ps:`` by default):

- ``P nodes``              SET of node ids that registered
- ``P node:{id}``          HASH id, fqdn, capacity, sockets, draining ("0"/"1"), started_at
- ``P node:{id}:alive``    STRING with a TTL, refreshed by the node's heartbeat; gone = node dead
- ``P node:{id}:inbox``    LIST of establish requests (JSON), BLPOP-ed by the node
- ``P reply:{request_id}`` LIST of replies (JSON) to one request: an ``ack`` then a ``done``
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

DEFAULT_PREFIX = "ps:"
NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
REPLY_TTL_SECONDS = 60


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

    def reply(self, request_id: str) -> str:
        return f"{self.prefix}reply:{request_id}"


@dataclass(slots=True)
class EstablishRequest:
    """Router -> node: open a WebSocket to ``target`` and hold it as ``socket``."""

    id: str
    socket: str
    target: str
    protocols: list[str]
    expires_at_ms: int  # wall clock; the node ignores a request that arrives after this
    caller: str = ""
    meta: dict[str, str] = field(default_factory=dict)  # admission facts (token id, origin) for reporting

    def encode(self) -> bytes:
        return orjson.dumps({"v": 1, **asdict(self)})

    @classmethod
    def decode(cls, raw: bytes | str) -> EstablishRequest:
        data: dict[str, Any] = orjson.loads(raw)
        if data.get("v") != 1:
            raise ValueError(f"unsupported establish request version: {data.get('v')!r}")
        return cls(
            id=str(data["id"]),
            socket=str(data["socket"]),
            target=str(data["target"]),
            protocols=[str(p) for p in data.get("protocols", [])],
            expires_at_ms=int(data["expires_at_ms"]),
            caller=str(data.get("caller", "")),
            meta={str(k): str(v) for k, v in dict(data.get("meta", {})).items()},
        )


@dataclass(frozen=True, slots=True)
class EstablishReply:
    """Node -> router. ``phase`` is ``ack`` (request taken) or ``done`` (outcome known)."""

    phase: str
    ok: bool = True
    protocol: str = ""
    error: str = ""
    message: str = ""

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
        )


# Pick the live, non-draining node with the lowest sockets/capacity and count the new socket on it,
# in one atomic step so that concurrent connects spread out. Records of dead nodes are pruned.
# KEYS[1] = nodes set. ARGV[1] = key prefix; ARGV[2..] = node ids to skip (a retry).
# Returns {node_id, fqdn} or nil.
PICK_NODE_LUA = """
local prefix = ARGV[1]
local skip = {}
for i = 2, #ARGV do skip[ARGV[i]] = true end
local best, best_load, best_fqdn = nil, nil, nil
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local nk = prefix .. 'node:' .. id
  if redis.call('EXISTS', nk .. ':alive') == 1 then
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
  end
end
if best == nil then return nil end
redis.call('HINCRBY', prefix .. 'node:' .. best, 'sockets', 1)
return {best, best_fqdn}
"""
