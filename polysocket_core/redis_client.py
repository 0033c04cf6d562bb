"""The one way the router, the relay and the CLI build their control-plane Redis client.

Building connects to nothing: redis-py opens a connection on the first command. That is why it
may sit in the pure core (it does no I/O; the services build their client once and reuse it),
and why a malformed URL fails here at once while a Redis that is down fails at the first command.

Every client gets the same options, because the failures they guard against are the same for
every role: a connect timeout, a read timeout above any blocking command polysocket issues (BLPOP
in slices of at most 2 s), TCP keepalive to find dead peers, and, since after a Redis restart or
failover every pooled connection is dead, a PING before reusing a connection idle for the
health-check interval and a retry of a command that meets a dead connection or times out, on a
fresh one with exponential backoff. What differs is how long a command waits out a restart
(:class:`Patience`): a relay node rides it out; a browser waiting on ``/connect`` or a person at
``polysocket token`` gets an answer sooner.

TLS: a ``rediss://`` URL verifies the server's certificate and name against the system's trust
store, which OpenSSL lets ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` replace; ``ca_file`` (the
``--redis-ca-file`` setting, ``POLYSOCKET_REDIS_CA_FILE``) adds a CA bundle of its own, for a
Redis whose certificate a private CA issued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # far above any blocking command: a node that wakes from a pause still reads its BLPOP
HEALTH_CHECK_S = 5
BACKOFF_BASE_S = 0.05


@dataclass(frozen=True, slots=True)
class Patience:
    """How long one command waits out a Redis restart: ``retries`` on a fresh connection, backing
    off exponentially from 50 ms up to ``backoff_cap_s`` between them."""

    retries: int
    backoff_cap_s: float


# A relay node: about 3 s in all, so a restart costs a short wait instead of one failed heartbeat,
# establish or lease renewal per pooled connection.
RIDE_OUT = Patience(retries=6, backoff_cap_s=1.0)
# Someone waits for the answer (a browser's /connect, a CLI command): about 0.4 s, then the error.
ANSWER_SOON = Patience(retries=3, backoff_cap_s=0.5)


def check_tls(url: str, ca_file: str) -> None:
    """A CA file verifies a TLS connection: with a plain ``redis://`` URL it would be silently unused."""
    if ca_file and urlsplit(url).scheme != "rediss":
        raise ValueError("a Redis CA file needs a rediss:// URL")


def redis_client(url: str, *, patience: Patience, ca_file: str = "",
                 decode_responses: bool = False) -> aioredis.Redis:
    """A client for a ``redis://`` or ``rediss://`` URL; it connects on first use."""
    check_tls(url, ca_file)
    # Only for rediss:// (check_tls): a plain connection takes no ssl_* argument.
    tls: dict[str, Any] = {"ssl_ca_certs": ca_file} if ca_file else {}
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=READ_TIMEOUT_S, socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_S,
        retry=Retry(ExponentialBackoff(cap=patience.backoff_cap_s, base=BACKOFF_BASE_S), patience.retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=decode_responses, **tls,
    )
