"""The round trips to Redis of every connect, written in RESP on connections of the caller's own.

Every ``GET /connect`` costs the router two pipelines (the admission's token lookup with its rate
counters; the pick with the short wait for the node's answer behind it: router_fn.establish) and
the node two commands (the inbox read that hands it the request, the answer's script:
relay_node.control.agent). Through redis-py each costs about as much CPU as the rest of the
request (bench/results/connect.md, ``direct-pipelines``: its pipeline object, retry wrapper,
per-command packing, a read timeout per reply). Here a pipeline is one packed write and its replies
read by hiredis as they arrive. Everything else the services say to Redis still goes through
redis-py.

Two kinds of connection, both opened like redis-py's (TLS, ``AUTH``, ``SELECT`` from the URL):

* one **shared** connection carries every pipeline that does not block: each caller's commands are
  written as they come and its replies handed back in order (Redis answers a connection in order),
  so concurrent callers share writes and reads instead of each holding a pooled connection;
* a pipeline that **blocks** (``BLPOP``) would hold up everyone queued behind it, so it takes a
  connection of its own from an idle stack and puts it back after.

The router's every connect runs one pipeline of each kind, the shared one first, so its pipelines
(``spare=True``) open a connection for the blocking ones beside the shared one whenever they open
that and have none idle: a new Lambda environment's first connect (and the first after Redis failed
over) waits for the two handshakes (TCP, TLS, ``AUTH``) at once instead of one after the other
(bench/results/cold-connect.md). While spares fail (Redis unreachable) none is opened again until a
connection opens, so an outage's retries do not double their attempts. A relay's inbox loop holds
its blocking connection all the time: its pipelines open none.

Failures are redis-py's exception types, so the callers' handling and ``redis_client.explain``
are unchanged. A connection that closes, or does not answer within the read timeout, fails every
pipeline waiting on it and is dropped with the idle connections beside it (dead alike, after a
freeze or a restart); each pipeline is then retried on a fresh connection as
redis-py's client retries (the :class:`~polysocket_core.redis_client.Patience`'s retries and
backoff; not a refused password or an unverifiable certificate). Replies are RESP2 as Redis sends
them, without redis-py's response callbacks, so callers use commands whose replies need none
(``HMGET``, not ``HGETALL``); a reply error is a ``ResponseError`` in its place in the list
(``NoScriptError`` for ``NOSCRIPT``, ``AuthenticationError`` for ``NOAUTH``/``WRONGPASS``).

A cluster routes each command by its slot, which redis-py's cluster client does: :func:`pipelines_for`
gives it (and a URL with query options redis-py would read) :class:`RedisPyPipelines` instead.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, cast
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from polysocket_core.redis_client import (
    BACKOFF_BASE_S,
    CONNECT_TIMEOUT_S,
    Patience,
    RedisUrl,
    check_tls,
    worth_retrying,
)

# How long a blocking pipeline waits for the spare connection still opening before it opens its own: a
# handshake inside a VPC takes a few ms, while a spare caught by a freeze (a Lambda environment frozen
# after a refused first connect, the spare's handshake in flight) could hold it up to the connect timeout.
SPARE_PATIENCE_S = 0.25

Arg = str | bytes | int | float
Command = Sequence[Arg]


class Pipelines(Protocol):
    """Runs a few commands in one round trip; the replies in order, a reply error in its place."""

    async def run(self, commands: Sequence[Command], *, blocks: bool = False) -> list[Any]:
        """``blocks``: a command may block (``BLPOP``), so the pipeline needs a connection alone."""
        ...

    async def aclose(self) -> None:
        ...


class RedisPyPipelines:
    """Through redis-py's pipelines: a cluster client (and any client a test builds) runs them so."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def run(self, commands: Sequence[Command], *, blocks: bool = False) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as p:
            for command in commands:
                p.execute_command(*command)
            return list(await p.execute(raise_on_error=False))

    async def aclose(self) -> None:
        """The redis-py client is its owner's to close."""


def pack(commands: Sequence[Command]) -> bytes:
    """The commands as one RESP write (arrays of bulk strings, as every client sends them)."""
    out = bytearray()
    for command in commands:
        out += b"*%d\r\n" % len(command)
        for arg in command:
            raw = arg if isinstance(arg, bytes) else (arg if isinstance(arg, str) else repr(arg)).encode()
            out += b"$%d\r\n%b\r\n" % (len(raw), raw)
    return bytes(out)


def raise_errors(replies: list[Any]) -> list[Any]:
    """``replies`` when none is an error; else the first error raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def run_script(pipelines: Pipelines, script: AsyncScript, keys: Sequence[str],
                     args: Sequence[str | bytes | int]) -> Any:
    """``script`` by its SHA on ``pipelines``; a Redis that lost its scripts (restarted, flushed)
    gets it loaded and run by redis-py once (``NOSCRIPT`` means nothing ran)."""
    [reply] = await pipelines.run([("EVALSHA", script.sha, len(keys), *keys, *args)])
    if isinstance(reply, NoScriptError):
        return await script(keys=list(keys), args=list(args))
    return raise_errors([reply])[0]


def _typed(error: ResponseError) -> RedisError:
    """A reply error as the redis-py class the callers catch."""
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return AuthenticationError(message)
    return error


class _Waiting:
    """One pipeline's place in a connection's queue: how many replies it waits for, and for how long."""

    __slots__ = ("expected", "future", "replies", "timer")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, timer: asyncio.TimerHandle) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.timer = timer


class _Connection(asyncio.Protocol):
    """One connection to Redis: writes go out as they come, replies go to the waiting pipelines in
    order. Once it fails (closed, or an answer overdue) it stays failed: ``broken`` says why."""

    def __init__(self, read_timeout_s: float) -> None:
        self.read_timeout_s = read_timeout_s
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._queue: deque[_Waiting] = deque()
        self._transport: asyncio.Transport | None = None
        self.broken: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:  # as redis_client's socket_keepalive: finds a peer that vanished
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if not self._queue:
                self._fail(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            waiting = self._queue[0]
            waiting.replies.append(_typed(reply) if type(reply) is ResponseError else reply)
            if len(waiting.replies) == waiting.expected:
                self._queue.popleft()
                waiting.timer.cancel()
                if not waiting.future.done():  # a caller cancelled (its request ended): the reply is dropped
                    waiting.future.set_result(waiting.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        error = RedisConnectionError(f"Connection to Redis lost: {exc or 'closed by the server'}")
        error.__cause__ = exc  # what redis_client.explain reads (a reset: TLS spoken to by plain text)
        self._fail(error)

    def _overdue(self) -> None:
        self._fail(RedisTimeoutError(f"Timeout reading from Redis ({self.read_timeout_s:g}s)"))

    def _fail(self, exc: Exception) -> None:
        """Every pipeline waiting here fails with ``exc``; the connection is closed and never reused."""
        if self.broken is None:
            self.broken = exc
        if self._transport is not None:
            self._transport.abort()
        while self._queue:
            waiting = self._queue.popleft()
            waiting.timer.cancel()
            if not waiting.future.done():
                waiting.future.set_exception(exc)

    def send(self, packed: bytes, expected: int) -> asyncio.Future[list[Any]]:
        """Write one pipeline; its future gets its ``expected`` replies."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self.broken is not None or self._transport is None:
            future.set_exception(self.broken or RedisConnectionError("not connected to Redis"))
            return future
        self._queue.append(_Waiting(future, expected, loop.call_later(self.read_timeout_s, self._overdue)))
        self._transport.write(packed)
        return future

    @property
    def idle(self) -> bool:
        return not self._queue

    def close(self) -> None:
        self._fail(RedisConnectionError("connection closed by its owner"))


class DirectPipelines:
    """:class:`Pipelines` on connections of its own to one Redis node (see the module docstring)."""

    def __init__(self, host: str, port: int, *, patience: Patience, username: str | None = None,
                 password: str | None = None, db: int = 0, tls: ssl.SSLContext | None = None,
                 spare: bool = False) -> None:
        self.host, self.port = host, port
        self.patience = patience
        self._hello: list[Command] = [("AUTH", *([username] if username else []), password)] if password else []
        if db:
            self._hello.append(("SELECT", db))
        self._tls = tls
        self._backoff = ExponentialBackoff(cap=patience.backoff_cap_s, base=BACKOFF_BASE_S)
        self._shared: _Connection | None = None
        self._opening_shared: asyncio.Lock | None = None
        self._idle: list[_Connection] = []  # connections for blocking pipelines, most recently used last
        self._spare_wanted = spare
        self._spare: asyncio.Task[_Connection] | None = None  # one for them, opening beside the shared one
        self._spare_failed = False  # the last spare did not open, and no connection has since
        self._closed = False

    async def run(self, commands: Sequence[Command], *, blocks: bool = False) -> list[Any]:
        packed, expected = pack(commands), len(commands)  # perf: direct-pipelines
        failures = 0
        while True:
            try:
                if blocks:
                    return await self._alone(packed, expected)
                return await self._together(packed, expected)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self._forget_idle()
                failures += 1
                if failures > self.patience.retries or not worth_retrying(exc):
                    raise
                await asyncio.sleep(self._backoff.compute(failures))

    def _forget_idle(self) -> None:
        """One connection found dead: those idle beside it likely are too (a NAT or a frozen Lambda
        forgot them all, Redis restarted). They are closed, so the next pipelines open fresh ones
        instead of each waiting out its own read timeout (docs/deploy.md: one read timeout, not one
        per connection)."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        if self._shared is not None and self._shared.idle:
            self._shared.close()

    async def _together(self, packed: bytes, expected: int) -> list[Any]:
        conn = self._shared
        if conn is None or conn.broken is not None:
            conn = await self._open_shared()
        return await conn.send(packed, expected)

    async def _open_shared(self) -> _Connection:
        """The shared connection, opened once however many pipelines find it missing at once."""
        if self._opening_shared is None:
            self._opening_shared = asyncio.Lock()
        async with self._opening_shared:
            if self._shared is None or self._shared.broken is not None:
                self._open_spare()
                self._shared = await self._open()
            return self._shared

    def _open_spare(self) -> None:
        """Start opening a connection for the next blocking pipeline unless one is idle or on its way."""
        self._idle = [c for c in self._idle if c.broken is None]  # dead while idle (a restart, a failover)
        if not self._spare_wanted or self._spare_failed or self._idle or self._spare is not None:
            return
        self._spare = asyncio.ensure_future(self._open())  # perf: spare-blocking-connection
        self._spare.add_done_callback(self._spare_opened)

    def _spare_opened(self, spare: asyncio.Task[_Connection]) -> None:
        """The spare joins the idle stack; a failed one is forgotten (the pipeline that needs a
        connection opens its own and meets the failure there, retried as any other)."""
        if self._spare is spare:
            self._spare = None
        if spare.cancelled():
            return
        if spare.exception() is not None:
            self._spare_failed = True
            return
        if self._closed:
            spare.result().close()
        else:
            self._idle.insert(0, spare.result())  # the least recently used end: taken when none other is idle

    async def _alone(self, packed: bytes, expected: int) -> list[Any]:
        conn = self._take_idle()
        if conn is None and self._spare is not None:
            await asyncio.wait([self._spare], timeout=SPARE_PATIENCE_S)  # not cancelled with this caller
            conn = self._take_idle()  # unless the spare failed, is late, or another caller took it first
        if conn is None:
            conn = await self._open()
        try:
            replies = await conn.send(packed, expected)
        except BaseException:
            conn.close()  # broken, or its caller gone (cancelled) with a reply still due: not reusable
            raise
        self._idle.append(conn)
        return replies

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            candidate = self._idle.pop()
            if candidate.broken is None:
                return candidate
        return None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        read_timeout_s = self.patience.read_timeout_s
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, conn = await loop.create_connection(
                    lambda: _Connection(read_timeout_s), self.host, self.port,
                    ssl=self._tls, server_hostname=self.host if self._tls else None)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise RedisConnectionError(f"Error connecting to {self.host}:{self.port}: {exc}") from exc
        self._spare_failed = False
        if self._hello:
            try:
                replies = await conn.send(pack(self._hello), len(self._hello))
            except BaseException:
                conn.close()  # timed out, or its opener cancelled (a spare at aclose)
                raise
            for command, reply in zip(self._hello, replies, strict=True):
                if isinstance(reply, RedisError):
                    conn.close()  # a refused AUTH is a mistake in the URL (redis_client.worth_retrying)
                    raise AuthenticationError(str(reply)) if command[0] == "AUTH" else reply
        return conn

    async def aclose(self) -> None:
        self._closed = True
        if self._spare is not None:
            self._spare.cancel()
        for conn in [*self._idle, *([self._shared] if self._shared else [])]:
            conn.close()
        self._idle.clear()
        self._shared = None


def direct_pipelines(url: str, *, patience: Patience, ca_file: str = "",
                     spare: bool = False) -> DirectPipelines | None:
    """Direct pipelines to the single Redis node ``url`` names; None for a cluster, or a URL with
    query options (those are redis-py's to read). ``spare``: see the module docstring."""
    parsed = RedisUrl(url)
    check_tls(url, ca_file)
    parts = urlsplit(parsed.plain)
    if parsed.cluster or parts.query or not parts.hostname:
        return None
    tls = None
    if parsed.tls:  # as redis-py's rediss://: the system's CAs and ca_file's; the host name verified
        tls = ssl.create_default_context()
        if ca_file:
            tls.load_verify_locations(cafile=ca_file)
    db = int(parts.path.strip("/") or 0)
    return DirectPipelines(parts.hostname, parts.port or 6379, patience=patience,
                           username=unquote(parts.username) if parts.username else None,
                           password=unquote(parts.password) if parts.password else None, db=db, tls=tls,
                           spare=spare)


def pipelines_for(url: str, redis: aioredis.Redis, *, patience: Patience, ca_file: str = "",
                  spare: bool = False) -> Pipelines:
    """A service's pipelines: direct where the URL allows it, else through ``redis`` (its client)."""
    return direct_pipelines(url, patience=patience, ca_file=ca_file, spare=spare) or RedisPyPipelines(redis)
