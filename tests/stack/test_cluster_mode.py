"""Cluster mode end to end: a router, two relays and the token CLI all given a ``redis+cluster://``
URL naming one node of a three-primary Valkey cluster; a connect echoes through, a token limit
holds, and revocation reaches the record. A single-node client at a cluster node would get MOVED for
keys of another primary's slots, and a transaction across two slots is refused, so every command
the control plane issues is exercised against the real cluster here."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis
from redis.cluster import RedisCluster

from polysocket_cli.processes import Stack
from polysocket_core.control import Keys
from router_fn.tokens import TokenStore, digest, token_id_of
from tests.support.cluster import start_valkey_cluster
from tests.support.slots import key_slot
from tests.support.wire_client import connect, connect_raw

pytestmark = pytest.mark.stack


@dataclass
class ClusterStack:
    stack: Stack
    ports: list[int]
    router: str
    echo: str

    def cli(self, *args: str) -> str:
        out = subprocess.run([*self.stack._cli(), "token", *args, "--redis-url", self.stack.redis_url],
                             capture_output=True, timeout=30, check=True)
        return out.stdout.decode()


@pytest.fixture(scope="module")
def cluster_stack() -> Iterator[ClusterStack]:
    s = Stack()
    try:
        ports = start_valkey_cluster(s)
        s.redis_url = f"redis+cluster://127.0.0.1:{ports[1]}"  # any node: the client finds the others
        for node in ("c1", "c2"):
            s.start_relay(node)
        router = s.start_router()
        echo = s.start_echo()
        yield ClusterStack(s, ports, f"http://127.0.0.1:{router.port}", f"ws://127.0.0.1:{echo.port}/")
    finally:
        s.stop()



def test_keys_of_one_transaction_share_a_slot() -> None:
    """What ``polysocket token create`` and the sweep write in one MULTI: one slot each."""
    keys = Keys()
    assert key_slot(keys.token("ab" * 32).encode()) == key_slot(keys.tokens.encode())
    assert key_slot(keys.sweep_absent.encode()) == key_slot(keys.sweep_recent.encode())
    # The per-connect token lookup is not on the fleet's slot: a cluster spreads it.
    assert key_slot(keys.tokens.encode()) != key_slot(keys.nodes.encode())


async def test_echo_through_router_and_relay_on_a_cluster(cluster_stack: ClusterStack,
                                                          http: httpx.AsyncClient) -> None:
    token = cluster_stack.stack.create_token()
    c = await connect(http, cluster_stack.router, cluster_stack.echo, token=token)
    assert (await c.send_text("through the cluster"))["ok"]
    got = await c.receive(1)
    assert [(m["type"], m["data"]) for m in got] == [("text", "through the cluster")]
    await c.close()
    # The record sits on the primary that owns the tag's slot, wherever the CLI connected.
    client = RedisCluster(host="127.0.0.1", port=cluster_stack.ports[0])
    try:
        assert client.exists(Keys().token(digest(token))) == 1
    finally:
        client.close()


async def test_token_limit_and_revoke_on_a_cluster(cluster_stack: ClusterStack, http: httpx.AsyncClient) -> None:
    token = cluster_stack.stack.create_token(max_sockets=1)
    first = await connect(http, cluster_stack.router, cluster_stack.echo, token=token)
    params = {"from": "pytest", "target": cluster_stack.echo, "token": token}
    second = await connect_raw(http, cluster_stack.router, params)
    assert second.get("error") == "limit_exceeded", second
    await first.close()
    assert token_id_of(token) in [t["id"] for t in json.loads(cluster_stack.cli("list", "--json"))]
    cluster_stack.cli("revoke", token_id_of(token))
    refused = await connect_raw(http, cluster_stack.router, params)
    assert refused.get("error") == "unauthorized", refused


async def test_a_token_written_before_the_tag_is_moved_under_it() -> None:
    """An upgrade keeps the tokens already issued: the first ``polysocket token`` command moves their
    records (no hash tag) to where the router looks, keeping a record already moved and changed."""
    s = Stack()
    try:
        s.start_valkey()
        r = aioredis.Redis.from_url(s.redis_url)
        store, keys = TokenStore(r, Keys()), Keys()
        token, record = await store.create(["*"], ["ws://127.0.0.1/*"], 5, label="old")
        d = digest(token)
        await r.rename(keys.token(d), keys.legacy_token(d))  # where the version before wrote it
        await r.rename(keys.tokens, keys.legacy_tokens)
        assert await store.lookup(token) is None
        s.create_token()  # any token command migrates first
        assert (await store.lookup(token)) == record
        assert await r.exists(keys.legacy_token(d), keys.legacy_tokens) == 0
        assert record.id in [t.id for t in await store.list()]
        revoked = await store.revoke(record.id)
        assert revoked is not None and revoked.revoked
        await r.hset(keys.legacy_token(d), mapping=record.to_redis())  # a rerun after a crash midway
        await r.hset(keys.legacy_tokens, record.id, d)
        assert await store.migrate_legacy() == 0
        assert (await store.get(record.id)).revoked  # type: ignore[union-attr]
        await r.aclose()
    finally:
        s.stop()


def test_status_reads_the_fleet_on_a_cluster(cluster_stack: ClusterStack) -> None:
    url = cluster_stack.stack.redis_url
    out = subprocess.run([*cluster_stack.stack._cli(), "status", "--json", "--redis-url", url],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode()
    assert {"c1", "c2"} <= {n["id"] for n in json.loads(out.stdout)["nodes"]}
