"""The one way the router, the relay and the CLI build their control-plane Redis client.

Building connects to nothing: redis-py opens a connection on the first command. That is why it
may sit in the pure core (it does no I/O; the services build their client once and reuse it),
and why a malformed URL fails here at once while a Redis that is down fails at the first command.

Every client gets the same options, because the failures they guard against are the same for
every role: a connect timeout, TCP keepalive to find dead peers, and, since after a Redis restart
or failover every pooled connection is dead, a PING before reusing a connection idle for the
health-check interval and a retry of a command that meets a dead connection or times out, on a
fresh one with exponential backoff. What differs is the role's :class:`Patience`: how long a read
waits for an answer, and how long a command waits out a restart. A relay node rides both out; a
browser waiting on ``/connect`` or a person at ``polysocket token`` gets an answer sooner.

A connection can also die in silence: a NAT or a VPC endpoint that forgets a connection idle for
350 s (a Lambda frozen between invocations) drops its packets, with no FIN or RST. Only a read
timeout finds it: the health-check PING (or the command) gets no answer, the connection is dropped
and the command retried on a fresh one. So a prompt role's read timeout is short: the cost of a
stale connection to the first request after the pause is that timeout plus one reconnect
(docs/deploy.md gives the number, tests/stack/test_redis_tls_auth.py the proof).

Redis Cluster (ElastiCache cluster mode): the scheme says so, ``redis+cluster://host:port`` or
``rediss+cluster://`` with TLS, naming any one node (the client learns the others from it, and follows
a slot's moves). The URL, not a probe at start, decides, so a misconfiguration fails at once and the
same URL means the same client in the router, the relay and the CLI. Every script and transaction
polysocket issues touches keys of one hash tag (polysocket_core.control.Keys), so one slot; a
cluster client is used through the same command methods as a single-node one.

TLS: a ``rediss://`` URL verifies the server's certificate and name against the system's trust
store, which OpenSSL lets ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` replace; ``ca_file`` (the
``--redis-ca-file`` setting, ``POLYSOCKET_REDIS_CA_FILE``) adds a CA bundle of its own, for a
Redis whose certificate a private CA issued.

When Redis cannot be used, :func:`explain` says why in one line an operator can act on (a wrong
password, a certificate not trusted, TLS or not on that port), naming the URL without its password:
the relay and ``polysocket token`` stop with it, the router logs it and answers ``no_relay``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT_S = 5.0
LONGEST_BLOCK_S = 2.0  # the longest a router's or the CLI's blocking command blocks (BLPOP slices); reads wait longer
HEALTH_CHECK_S = 5
BACKOFF_BASE_S = 0.05


@dataclass(frozen=True, slots=True)
class Patience:
    """How long a read waits for its answer (``read_timeout_s``, above :data:`LONGEST_BLOCK_S`),
    and how long one command waits out a Redis restart: ``retries`` on a fresh connection, backing
    off exponentially from 50 ms up to ``backoff_cap_s`` between them."""

    read_timeout_s: float
    retries: int
    backoff_cap_s: float

    def __post_init__(self) -> None:
        if self.read_timeout_s <= LONGEST_BLOCK_S:
            raise ValueError("a read timeout must be above the longest blocking command")


# A relay node: a read waits a minute, far above any pause the process may suffer (a node that wakes
# must still read the establish request its BLPOP was handed); a restart is waited out for about
# 3 s in all, so it costs a short wait instead of one failed heartbeat, establish or lease renewal.
RIDE_OUT = Patience(read_timeout_s=60.0, retries=6, backoff_cap_s=1.0)
# Someone waits for the answer (a browser's /connect, a CLI command): a read gets 1 s beyond the
# longest block, so a connection that died in silence costs 3 s, not a minute; a restart about
# 0.4 s, then the error.
ANSWER_SOON = Patience(read_timeout_s=LONGEST_BLOCK_S + 1.0, retries=3, backoff_cap_s=0.5)


CLUSTER_SUFFIX = "+cluster"
SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """What a ``--redis-url`` asks for: TLS or not, one node or a cluster, and the URL redis-py takes."""

    url: str

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in SCHEMES:
            raise ValueError(f"a Redis URL starts {', '.join(s + '://' for s in SCHEMES)}; got {scheme or 'none'!r}")
        if self.cluster and urlsplit(self.url).path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has database 0 only: drop the /N from the URL")

    @property
    def cluster(self) -> bool:
        return urlsplit(self.url).scheme.endswith(CLUSTER_SUFFIX)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme.startswith("rediss")

    @property
    def plain(self) -> str:
        """The URL with the plain scheme redis-py parses (the cluster marker removed)."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(scheme=parts.scheme.removesuffix(CLUSTER_SUFFIX)))


def check_tls(url: str, ca_file: str) -> None:
    """A CA file verifies a TLS connection: with a plain ``redis://`` URL it would be silently unused."""
    if ca_file and not RedisUrl(url).tls:
        raise ValueError("a Redis CA file needs a rediss:// (or rediss+cluster://) URL")


def redis_client(url: str, *, patience: Patience, ca_file: str = "",
                 decode_responses: bool = False) -> aioredis.Redis:
    """A client for a ``redis[s]://`` or ``redis[s]+cluster://`` URL; it connects on first use."""
    parsed = RedisUrl(url)
    check_tls(url, ca_file)
    # Only for rediss:// (check_tls): a plain connection takes no ssl_* argument.
    tls: dict[str, Any] = {"ssl_ca_certs": ca_file} if ca_file else {}
    retry = Retry(ExponentialBackoff(cap=patience.backoff_cap_s, base=BACKOFF_BASE_S), patience.retries)
    if hasattr(retry, "is_retryable"):  # redis-py 8 (older ones retry every connection error, mistakes too)
        retry.is_retryable = worth_retrying
    common: dict[str, Any] = dict(
        socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=patience.read_timeout_s, socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_S,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=decode_responses, **tls,
    )
    if parsed.cluster:
        # The cluster client offers every command method the services call on a single-node client
        # (tests/stack/test_cluster_mode.py runs router, relay and CLI through it); redis-py's types
        # do not share a base class, hence the cast instead of a union at every call site.
        return cast(aioredis.Redis, RedisCluster.from_url(parsed.plain, **common))
    return aioredis.Redis.from_url(parsed.plain, **common)


def without_password(url: str) -> str:
    """The URL as a log line may show it: its password (an ElastiCache auth token) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from or during (unless it said ``from None``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def worth_retrying(exc: BaseException) -> bool:
    """Whether a failed command may succeed on a fresh connection: not when Redis refused the
    credentials or its certificate cannot be verified. Those are mistakes in the configuration, and
    retrying them only delays the one line that says so (:func:`explain`) by the whole patience."""
    return not any(isinstance(c, AuthenticationError | ssl.SSLCertVerificationError) for c in _causes(exc))


def explain(url: str, exc: BaseException) -> str:
    """Why Redis at ``url`` could not be used, in one line that names the likely fix.

    redis-py wraps the cause (an ``ssl.SSLError``, a reset) in its ``ConnectionError``; the cause
    says which mistake it was. A plain-text client at a TLS port sees the server hang up on its
    first command; a TLS client at a plain-text port sees a handshake that is not TLS.
    """
    where = without_password(url)
    tls = urlsplit(url).scheme.startswith("rediss")
    causes = list(_causes(exc))
    if any(isinstance(c, AuthenticationError) for c in causes):
        return f"Redis at {where} refused the credentials (wrong user or password in the URL): {exc}"
    verify = next((c for c in causes if isinstance(c, ssl.SSLCertVerificationError)), None)
    if verify is not None:
        return (f"cannot verify the TLS certificate of Redis at {where}: {verify.verify_message}; give the CA "
                "that issued it with --redis-ca-file (POLYSOCKET_REDIS_CA_FILE)")
    tls_error = next((c for c in causes if isinstance(c, ssl.SSLError)), None)
    if tls_error is not None:
        return (f"TLS with Redis at {where} failed ({tls_error.reason or tls_error}): if that port speaks "
                "plain text, the URL starts redis://")
    if not tls and any(isinstance(c, ConnectionResetError | ConnectionAbortedError) for c in causes):
        return (f"Redis at {where} hung up on the first command: if that port speaks TLS (ElastiCache with "
                "transit encryption), the URL starts rediss://")
    # A plain-text server waits for a command, not a ClientHello: the connect (not a read) times out.
    connect_timed_out = isinstance(exc, RedisTimeoutError) and any(isinstance(c, TimeoutError) for c in causes)
    if tls and connect_timed_out:
        return (f"cannot reach Redis at {where}: {exc} (if that port speaks plain text, the TLS handshake never "
                "completes: the URL starts redis://)")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return f"cannot reach Redis at {where}: {exc}"
    return f"Redis at {where} answered with an error: {exc}"


class RedisUnusable(Exception):
    """Redis could not be used at all (at a service's start): :func:`explain`'s line is the message."""

    def __init__(self, url: str, cause: RedisError | OSError) -> None:
        super().__init__(explain(url, cause))
