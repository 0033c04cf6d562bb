"""The one Redis client builder (polysocket_core.redis_client), without a Redis: the options every
role gets, and a CA file only with a rediss:// URL (TLS against a real Valkey: tests/stack/test_redis_tls.py)."""

from __future__ import annotations

import pytest

from polysocket_cli.settings import TokenSettings
from polysocket_core.redis_client import ANSWER_SOON, RIDE_OUT, redis_client
from polysocket_core.settings import SettingError, resolve
from relay_node.settings import RelayConfig
from router_fn.settings import RouterSettings


def test_every_role_gets_the_same_options_but_its_patience() -> None:
    prompt, patient = (redis_client("redis://127.0.0.1:1/0", patience=p) for p in (ANSWER_SOON, RIDE_OUT))
    for client in (prompt, patient):  # built without connecting: nothing listens on port 1
        kw = client.connection_pool.connection_kwargs
        assert (kw["socket_connect_timeout"], kw["socket_timeout"], kw["socket_keepalive"]) == (5.0, 60.0, True)
        assert kw["health_check_interval"] == 5
    assert prompt.get_retry().get_retries() == 3 and patient.get_retry().get_retries() == 6  # type: ignore[union-attr]


def test_a_ca_file_needs_a_tls_url() -> None:
    with pytest.raises(ValueError, match="rediss://"):
        redis_client("redis://127.0.0.1:6379/0", patience=ANSWER_SOON, ca_file="/ca.pem")
    env = {"POLYSOCKET_REDIS_URL": "redis://h:6379/0", "POLYSOCKET_REDIS_CA_FILE": "/ca.pem"}
    with pytest.raises(SettingError, match="rediss://"):
        resolve(RouterSettings, env)  # at start, though under Lambda the client is built on first use
    tls_env = {**env, "POLYSOCKET_REDIS_URL": "rediss://h:6380/0"}
    for cls in (RouterSettings, RelayConfig, TokenSettings):
        assert resolve(cls, tls_env).redis_ca_file == "/ca.pem"  # type: ignore[attr-defined]
