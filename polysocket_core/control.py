"""Control-plane schema on Redis: key names, node records, establish messages, the node scripts.

The router and the relay talk only through these keys (message passing on Redis lists, no HTTP
between them), so this module is the whole contract; docs/protocol.md describes it for operators.

Keys (``P`` is the prefix, ``ps:`` by default). The fleet's keys all carry the hash tag ``{P}``, so
they live in one Redis Cluster slot and every script below touches one slot only; the per-request
and per-token keys (replies, tokens, rate limits) carry none and spread over the cluster:

- ``{P}nodes``             SET of node ids that registered (listing: kill, sweeps; not the pick)
- ``{P}live``              ZSET node id -> sockets/capacity of the live, non-draining nodes: the
                           pick's index (a score >= 1 is a full node)
- ``{P}deadlines``         ZSET node id -> heartbeat deadline (ms): the nodes whose token counts are
                           in ``{P}used``; a node past its deadline is retired (see the scripts)
- ``{P}forget``            ZSET node id -> when a retired node's listing and inbox are dropped (ms)
- ``{P}used``              HASH token id -> sockets the live nodes published for it (sum of their
                           ``tokens`` hashes)
- ``{P}resv:{token id}``   ZSET establish request id -> expiry (ms): the token's reservations picked
                           and not yet settled by the taking node's heartbeat
- ``{P}node:{id}:resv``    ZSET "{token id} {request id}" -> expiry (ms): the same reservations by
                           node, withdrawn with the node when it dies or leaves
- ``{P}node:{id}``         HASH id, fqdn, capacity, sockets, draining ("0"/"1"), started_at, picked
                           (requests picked since its last report: the pick's first criterion)
- ``{P}node:{id}:alive``   STRING with a TTL, refreshed by the node's heartbeat; gone = node dead
- ``{P}node:{id}:inbox``   LIST of establish requests (JSON), BLPOP-ed by the node
- ``{P}node:{id}:tokens``  HASH token id -> sockets the node holds or is opening for it (absolute,
                           rewritten by every heartbeat; counted in ``{P}used`` while the node is in
                           ``{P}deadlines``)
- ``P reply:{request_id}`` LIST of replies (JSON) to one request: a ``done``, after an ``ack`` if the open is slow
                           (the id in literal braces, a hash tag shared with ``P abandoned:…``: one script)
- ``{Ptokens}token:{sha256}`` HASH of one token (see router_fn.tokens); ``{Ptokens}ids`` HASH
                           id -> sha256 (a tag of their own: ``polysocket token create`` writes both
                           in one transaction, which a cluster runs only within one slot; ``P token:…``
                           / ``P tokens`` are their names before, moved by the CLI: :meth:`Keys.legacy_token`)
- ``P rl:{kind}:{key}:{window}`` connect rate-limit counters
- ``P sweep:lock``         STRING the relay sweeping stale DNS records holds (a random token, a TTL)
- ``{P}sweep:absent``      HASH record name -> when sweeps first/last saw its node missing (the grace clock)
- ``{P}sweep:recent``      STRING with a TTL: the fleet swept lately, the next relay's tick skips
                           (both written in one transaction at the end of a sweep: one slot)

How a node is picked, and how the token limits stay exact in O(1): the comment above the scripts
(PICK_NODE_LUA, NODE_REPORT_LUA) below, the one place that explains them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

DEFAULT_PREFIX = "ps:"
NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
REPLY_TTL_SECONDS = 60
# A picked reservation counts until the node that took the request settles it with its heartbeat;
# if none does (request lost, node dead), it expires this long after the request itself.
RESERVATION_GRACE_MS = 10_000
NODE_RECORD_TTL_S = 3600  # a dead node's records linger this long at most (its alive key goes first)


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"key prefix must be non-empty and free of braces (a hash tag): {self.prefix!r}")

    @property
    def tag(self) -> str:
        """The fleet's hash tag: every key a script touches starts with it (one cluster slot)."""
        return "{" + self.prefix + "}"

    @property
    def nodes(self) -> str:
        return f"{self.tag}nodes"

    @property
    def live(self) -> str:
        return f"{self.tag}live"

    @property
    def deadlines(self) -> str:
        return f"{self.tag}deadlines"

    @property
    def forget(self) -> str:
        return f"{self.tag}forget"

    @property
    def used(self) -> str:
        return f"{self.tag}used"

    @property
    def fleet(self) -> list[str]:
        """KEYS[1..5] of both node scripts, in their order."""
        return [self.live, self.deadlines, self.used, self.nodes, self.forget]

    def node(self, node_id: str) -> str:
        return f"{self.tag}node:{node_id}"

    def alive(self, node_id: str) -> str:
        return f"{self.tag}node:{node_id}:alive"

    def inbox(self, node_id: str) -> str:
        return f"{self.tag}node:{node_id}:inbox"

    def node_tokens(self, node_id: str) -> str:
        return f"{self.tag}node:{node_id}:tokens"

    def reservations(self, token_id: str) -> str:
        return f"{self.tag}resv:{token_id}"

    def node_reservations(self, node_id: str) -> str:
        """The same reservations by node ("{token id} {request id}" -> expiry): a node that dies or
        leaves takes its unsettled reservations out of the tokens' sets with it."""
        return f"{self.tag}node:{node_id}:resv"

    def reply(self, request_id: str) -> str:
        """Tagged by the request id, as ``abandoned``: the relay's answer and its check of that marker
        go in one script (``REPLY_LUA``), which a cluster runs only within one slot; requests still
        spread."""
        return f"{self.prefix}reply:{{{request_id}}}"

    def abandoned(self, request_id: str) -> str:
        """Set by a router that gave up on a node which took the request (frozen, too slow): the node
        must not open the socket, or must close it if it already did."""
        return f"{self.prefix}abandoned:{{{request_id}}}"

    @property
    def token_tag(self) -> str:
        """The tokens' hash tag: a record and the id index in one slot (one transaction), apart
        from the fleet's, so that a cluster serves the per-connect token lookup on another primary."""
        return "{" + self.prefix + "tokens}"

    def token(self, digest: str) -> str:
        return f"{self.token_tag}token:{digest}"

    @property
    def tokens(self) -> str:
        return f"{self.token_tag}ids"

    def legacy_token(self, digest: str) -> str:
        """A token's key as versions before cluster support wrote it (no hash tag): every ``polysocket
        token`` command moves such records under the tag first (``TokenStore.migrate_legacy``)."""
        return f"{self.prefix}token:{digest}"

    @property
    def legacy_tokens(self) -> str:
        return f"{self.prefix}tokens"

    def rate(self, kind: str, key: str, window: int) -> str:
        return f"{self.prefix}rl:{kind}:{key}:{window}"

    @property
    def sweep_lock(self) -> str:
        """One relay at a time sweeps stale DNS records (relay_node.control.aws.sweeper)."""
        return f"{self.prefix}sweep:lock"

    @property
    def sweep_absent(self) -> str:
        return f"{self.tag}sweep:absent"

    @property
    def sweep_recent(self) -> str:
        return f"{self.tag}sweep:recent"


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
    # Wall clock: the router waits for this node at least until then (its ack timeout), so a node
    # that takes the request sooner need not ask whether the router gave up on it (0: ask always,
    # as from a router before the field).
    firm_until_ms: int = 0

    def encode(self) -> bytes:
        # A shallow dict of the fields: ``asdict`` deep-copies ``meta`` and the lists first, 20 against
        # 1 µs per request (once per connect on the router; bench/results/connect.md).
        return orjson.dumps({"v": 1, "op": "establish", **{name: getattr(self, name) for name in _REQUEST_FIELDS}})

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
            firm_until_ms=int(data.get("firm_until_ms", 0)),
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


_REQUEST_FIELDS = tuple(f.name for f in fields(EstablishRequest))


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
        return orjson.dumps(self)  # orjson writes a dataclass's fields itself (8 against 1 µs with ``asdict``)

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


# ---------------------------------------------------------------------------------------------
# The node scripts. What they guarantee, and why each costs O(log N) whatever the fleet's size:
#
# Selection (PICK_NODE_LUA, one atomic step per connect). ``{P}live`` indexes the live,
# non-draining nodes by load = sockets/capacity; the ``room`` nodes with load < 1 are its first
# ``room`` ranks (ZCOUNT). The router passes PICK_CHOICES random numbers; they name that many
# distinct ranks among the nodes with room, and of the candidates the one picked fewer times since
# its last heartbeat (``picked`` in its hash, reset by each report) wins, the lower load breaking a
# tie ("power of two choices"). Between two heartbeats the pick is thus two-choice balls-into-bins
# (the share of the busiest node stays near the mean: bench.fleet measures it, issue 19 asks for at
# most 2x in a reconnect burst and a scale-out), while each heartbeat resets the counts, so at any
# rate below about one connect per node per heartbeat the load decides and levels. A strictly
# less-loaded comparison gave the least-loaded node, sampled PICK_CHOICES times as often as the
# mean, every one of those connects: 3.3x the mean share at 1,000 nodes in a 10,000-connect burst,
# 1.8x with ``picked`` first (bench.placement models it; bench.fleet runs the script). The index
# only proposes: each candidate is checked against the truth (its ``alive`` key, and ``capacity``,
# ``sockets`` and ``draining`` in its hash) — a dead node is dropped from the index, a stale score
# rewritten — and a candidate the router skips (the node that just failed it) or that fails the
# check gives way to the next rank, at most PICK_STEPS ranks per choice; if all of them failed (many
# nodes died at once and are not retired yet), the PICK_FALLBACK least-loaded are tried in order,
# so "no node" means no live node with room among them. The chosen node's ``sockets``, ``picked``
# and score go up by one socket, its request is pushed to its inbox in the same step (a
# reservation never exists without its request), so it is never over capacity.
#
# Token limits in O(1). ``{P}used`` holds, per token, the sum of the counts the live nodes
# published in their ``tokens`` hashes; ``{P}resv:{token}`` the token's reservations in flight
# (expiry-scored: dropped by the pick when expired, by the taking node's heartbeat when settled, by
# the router when it withdraws the request). A connect reads one HGET and one ZCARD, refuses at
# the limit, else adds its request to ``resv``. A node's counts enter ``used`` with each heartbeat
# (NODE_REPORT_LUA adds what changed since the node's previous counts, and settles its
# taken requests, in one step) and leave it when the node deregisters or is retired, with its
# unsettled reservations (indexed by node in ``node:{id}:resv`` for that): a node whose
# deadline in ``{P}deadlines`` has passed is retired by the next script to run (a pick or any
# heartbeat, RETIRE_BATCH nodes at a time, so the cost is paid once per death, not per connect).
# Until then a dead node's counts still count: the limit errs on the safe side for at most a
# moment. Counts are absolute and reservations expire, so after Redis loses its data every node's
# next heartbeat (which finds itself absent from ``deadlines``) adds its whole count again: exact
# within one heartbeat.
#
# Retired nodes are forgotten (dropped from ``{P}nodes``, inbox deleted) NODE_RECORD_TTL_S later.
# ---------------------------------------------------------------------------------------------

PICK_CHOICES = 2  # candidates per pick (power of two choices)
PICK_STEPS = 4  # ranks a candidate may move on past skipped, dead, draining or full nodes
PICK_FALLBACK = 32  # when every candidate failed its check: the least-loaded this many, in order
RETIRE_BATCH = 4  # dead nodes retired (or forgotten) per script run, at most

# Shared by both scripts: KEYS[1..5] = Keys.fleet; ``tag`` and ``now_ms`` are set by the caller.
_RETIRE_LUA = """
local function withdraw_counts(nk)
  local held = redis.call('HGETALL', nk .. ':tokens')
  for i = 1, #held, 2 do
    if redis.call('HINCRBY', KEYS[3], held[i], -tonumber(held[i + 1])) <= 0 then
      redis.call('HDEL', KEYS[3], held[i])
    end
  end
  redis.call('DEL', nk .. ':tokens')
end
local function withdraw_reservations(nk)
  for _, m in ipairs(redis.call('ZRANGE', nk .. ':resv', 0, -1)) do
    local token, rid = string.match(m, '^(.*) ([^ ]*)$')
    if token then redis.call('ZREM', tag .. 'resv:' .. token, rid) end
  end
  redis.call('DEL', nk .. ':resv')
end
local function retire(now_ms)
  local batch = """ + str(RETIRE_BATCH) + """
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, batch)) do
    withdraw_counts(tag .. 'node:' .. id)
    withdraw_reservations(tag .. 'node:' .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[5], now_ms + """ + str(NODE_RECORD_TTL_S * 1000) + """, id)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms, 'LIMIT', 0, batch)) do
    redis.call('SREM', KEYS[4], id)
    redis.call('DEL', tag .. 'node:' .. id .. ':inbox')
    redis.call('ZREM', KEYS[5], id)
  end
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS = Keys.fleet + [Keys.reservations(token id)] (any same-slot key when there is no token).
# ARGV[1] = Keys.tag, ARGV[2] = token id ("" = none), ARGV[3] = max sockets (0 = no limit),
# ARGV[4] = the encoded request, ARGV[5 .. 4+PICK_CHOICES] = random integers >= 0 (the router's
# random source), then the node ids to skip (a retry). Returns {"ok", node_id, fqdn},
# {"limit", count} or nil (no node).
PICK_NODE_LUA = "local tag = ARGV[1]\n" + _RETIRE_LUA + """
retire(now_ms)
local token, limit = ARGV[2], tonumber(ARGV[3])
if token ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now_ms)
  local used = (tonumber(redis.call('HGET', KEYS[3], token)) or 0) + redis.call('ZCARD', KEYS[6])
  if limit > 0 and used >= limit then return {'limit', tostring(used)} end
end
local choices = """ + str(PICK_CHOICES) + """
local skip = {}
for i = 5 + choices, #ARGV do skip[ARGV[i]] = true end
-- A candidate's truth, from its own keys; the index is corrected when it was wrong.
local function check(id)
  local nk = tag .. 'node:' .. id
  if redis.call('EXISTS', nk .. ':alive') == 0 then
    redis.call('ZREM', KEYS[1], id)
    return nil
  end
  local f = redis.call('HMGET', nk, 'fqdn', 'capacity', 'sockets', 'draining', 'picked')
  local cap, n = tonumber(f[2]) or 0, tonumber(f[3]) or 0
  if not f[1] or f[4] == '1' or cap <= 0 then
    redis.call('ZREM', KEYS[1], id)
    return nil
  end
  if n >= cap then
    redis.call('ZADD', KEYS[1], n / cap, id)
    return nil
  end
  return {id, n, cap, f[1], tonumber(f[5]) or 0}
end
-- The better candidate: fewer requests picked since its last heartbeat, then the lower load.
local function better(a, b)
  if a[5] ~= b[5] then return a[5] < b[5] end
  return a[2] / a[3] < b[2] / b[3]
end
local room = redis.call('ZCOUNT', KEYS[1], '-inf', '(1')
local best = nil
local taken = {}
for c = 1, math.min(choices, room) do
  -- distinct ranks: the c-th choice draws among the ranks the earlier ones did not take
  local rank = tonumber(ARGV[4 + c]) % (room - c + 1)
  for _, r in ipairs(taken) do if rank >= r then rank = rank + 1 end end
  table.insert(taken, rank)
  table.sort(taken)
  for s = 0, """ + str(PICK_STEPS - 1) + """ do
    local got = redis.call('ZRANGE', KEYS[1], (rank + s) % room, (rank + s) % room)
    local id = got[1]
    if id ~= nil and not skip[id] then
      local cand = check(id)
      if cand then
        if best == nil or better(cand, best) then best = cand end
        break
      end
    end
  end
end
if best == nil and room > 0 then
  -- every candidate was skipped or stale (a mass death not yet retired): the least-loaded that fits
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, """ + str(PICK_FALLBACK - 1) + """)) do
    if not skip[id] then
      best = check(id)
      if best then break end
    end
  end
end
if best == nil then return nil end
local id, nk = best[1], tag .. 'node:' .. best[1]
redis.call('HSET', nk, 'sockets', best[2] + 1, 'picked', best[5] + 1)
redis.call('ZADD', KEYS[1], (best[2] + 1) / best[3], id)
if token ~= '' then
  local req = cjson.decode(ARGV[4])
  local expiry = tonumber(req['expires_at_ms']) + """ + str(RESERVATION_GRACE_MS) + """
  redis.call('ZADD', KEYS[6], expiry, req['id'])
  redis.call('PEXPIREAT', KEYS[6], math.max(expiry, tonumber(redis.call('PEXPIRETIME', KEYS[6]))))
  redis.call('ZADD', nk .. ':resv', expiry, token .. ' ' .. req['id'])
  redis.call('PEXPIREAT', nk .. ':resv', math.max(expiry, tonumber(redis.call('PEXPIRETIME', nk .. ':resv'))))
end
redis.call('RPUSH', nk .. ':inbox', ARGV[4])
return {'ok', id, best[4]}
"""

# A node's answer to a router (perf: reply-script): push it on the request's reply list (kept
# ``REPLY_TTL_SECONDS`` for a router that reads late) and say whether that router gave up on the
# request (its abandon marker), atomically, in one command: the MULTI it replaces cost the node a
# pipeline of five. KEYS[1] = Keys.reply(id), KEYS[2] = Keys.abandoned(id) (one slot: both tagged
# by the id). ARGV[1] = the encoded reply, ARGV[2] = the TTL. Returns 1 if the router gave up.
REPLY_LUA = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('EXISTS', KEYS[2])
"""

# What a node tells the control plane: ``register`` (a fresh life: its queued requests are dropped),
# ``beat`` (the heartbeat) or ``leave`` (deregister). KEYS = Keys.fleet. ARGV[1] = Keys.tag,
# ARGV[2] = node id, ARGV[3] = mode, ARGV[4] = heartbeat TTL (ms), ARGV[5..9] = fqdn, capacity,
# sockets, draining ("0"/"1"), started_at (a register only), ARGV[10] = how many token counts
# follow, then token id/count pairs, then token id/request id pairs of the requests it took since
# its last report (settled: they leave ``resv`` as they enter its counts).
NODE_REPORT_LUA = "local tag = ARGV[1]\n" + _RETIRE_LUA + """
retire(now_ms)
local id, mode, ttl_ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
local nk = tag .. 'node:' .. id
-- The counts of this node that ``used`` holds now: none if it is not counted (new, retired, or
-- Redis lost its data). Only the tokens whose count changed are written below.
local held = {}
if redis.call('ZSCORE', KEYS[2], id) then
  local flat = redis.call('HGETALL', nk .. ':tokens')
  for j = 1, #flat, 2 do held[flat[j]] = tonumber(flat[j + 1]) end
else
  redis.call('DEL', nk .. ':tokens')
end
local function add(token, d)
  if d ~= 0 and redis.call('HINCRBY', KEYS[3], token, d) <= 0 then redis.call('HDEL', KEYS[3], token) end
end
redis.call('ZREM', KEYS[5], id)
if mode ~= 'beat' then withdraw_reservations(nk) end
if mode == 'leave' then
  for token, n in pairs(held) do add(token, -n) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('SREM', KEYS[4], id)
  redis.call('DEL', nk, nk .. ':alive', nk .. ':inbox', nk .. ':tokens')
  return 1
end
local cap, draining = tonumber(ARGV[6]) or 0, ARGV[8]
redis.call('HSET', nk, 'id', id, 'fqdn', ARGV[5], 'capacity', ARGV[6], 'sockets', ARGV[7], 'draining', draining,
           'picked', 0)
if mode == 'register' then
  redis.call('HSET', nk, 'started_at', ARGV[9])
  redis.call('DEL', nk .. ':inbox')
end
redis.call('EXPIRE', nk, """ + str(NODE_RECORD_TTL_S) + """)
redis.call('SADD', KEYS[4], id)
redis.call('SET', nk .. ':alive', '1', 'PX', ttl_ms)
redis.call('ZADD', KEYS[2], now_ms + ttl_ms, id)
local i = 11
for _ = 1, tonumber(ARGV[10]) do
  local token, n = ARGV[i], tonumber(ARGV[i + 1])
  if n > 0 and n ~= held[token] then
    add(token, n - (held[token] or 0))
    redis.call('HSET', nk .. ':tokens', token, n)
  end
  if n > 0 then held[token] = nil end
  i = i + 2
end
for token, n in pairs(held) do
  add(token, -n)
  redis.call('HDEL', nk .. ':tokens', token)
end
while i < #ARGV do
  redis.call('ZREM', tag .. 'resv:' .. ARGV[i], ARGV[i + 1])
  redis.call('ZREM', nk .. ':resv', ARGV[i] .. ' ' .. ARGV[i + 1])
  i = i + 2
end
redis.call('ZREMRANGEBYSCORE', nk .. ':resv', '-inf', now_ms)
if draining ~= '1' and cap > 0 then
  redis.call('ZADD', KEYS[1], (tonumber(ARGV[7]) or 0) / cap, id)
else
  redis.call('ZREM', KEYS[1], id)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class NodeReport:
    """One ``NODE_REPORT_LUA`` call: what a node publishes about itself."""

    node_id: str
    mode: str  # "register", "beat" or "leave"
    ttl_ms: int
    fqdn: str = ""
    capacity: int = 0
    sockets: int = 0
    draining: bool = False
    started_at: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    settle: Sequence[tuple[str, str]] = ()  # (token id, request id) taken since the last report

    def args(self, keys: Keys) -> list[str | int]:
        out: list[str | int] = [keys.tag, self.node_id, self.mode, self.ttl_ms, self.fqdn, self.capacity,
                                self.sockets, "1" if self.draining else "0", self.started_at, len(self.counts)]
        for token_id, n in self.counts.items():
            out += [token_id, n]
        for token_id, request_id in self.settle:
            out += [token_id, request_id]
        return out


def reservation_member(token_id: str, request_id: str) -> str:
    """A reservation's member in ``Keys.node_reservations`` (the scripts build the same)."""
    return f"{token_id} {request_id}"


def pick_args(keys: Keys, token_id: str, max_sockets: int, payload: bytes | str, draws: Sequence[int],
              skip: Sequence[str]) -> tuple[list[str], list[str | int | bytes]]:
    """KEYS and ARGV of ``PICK_NODE_LUA``; ``draws`` are PICK_CHOICES random integers >= 0."""
    if len(draws) != PICK_CHOICES:
        raise ValueError(f"the pick takes {PICK_CHOICES} random draws, got {len(draws)}")
    return ([*keys.fleet, keys.reservations(token_id)],
            [keys.tag, token_id, max_sockets, payload, *draws, *skip])
