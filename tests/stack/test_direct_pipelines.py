"""The direct pipelines of the router and the relay (polysocket_redis.pipelines) against a real
Valkey: the same replies as redis-py's pipelines for every command a connect sends, each caller its
own replies when many share the connection, reply errors in place, a lost script loaded once, and
the failures redis-py's client survives (a restart, a stalled server, a caller that gives up)
survived the same way. TLS, AUTH and the one-line explanations go through the router and the relay
in tests/stack/test_redis_tls_auth.py."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from polysocket_core.control import (
    NODE_REPORT_LUA,
    PICK_NODE_LUA,
    REPLY_LUA,
    EstablishRequest,
    Keys,
    NodeReport,
    pick_args,
)
from polysocket_core.redis_client import ANSWER_SOON, LONGEST_BLOCK_S, Patience
from polysocket_redis.pipelines import (
    SPARE_PATIENCE_S,
    DirectPipelines,
    RedisPyPipelines,
    direct_pipelines,
    pack,
    pipelines_for,
    run_script,
)
from router_fn.app import create_app
from router_fn.settings import RouterSettings
from tests.support.valkey import RestartableValkey

pytestmark = pytest.mark.stack

KEYS = Keys("dp:")


@pytest.fixture
def valkey() -> Iterator[RestartableValkey]:
    v = RestartableValkey()
    try:
        yield v
    finally:
        v.stack.stop()


@pytest.fixture
async def clients(valkey: RestartableValkey) -> AsyncIterator[tuple[aioredis.Redis, DirectPipelines]]:
    r = aioredis.Redis.from_url(valkey.url)
    direct = direct_pipelines(valkey.url, patience=ANSWER_SOON)
    assert direct is not None
    yield r, direct
    await direct.aclose()
    await r.aclose()


def test_pack_is_resp_arrays_of_bulk_strings() -> None:
    assert pack([("SET", "k", b"v\r\n"), ("EXPIRE", "k", 5), ("BLPOP", "q", 0.025)]) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n"
        b"*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$1\r\n5\r\n"
        b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$5\r\n0.025\r\n")


def test_which_urls_get_direct_pipelines() -> None:
    assert isinstance(direct_pipelines("redis://h:7/3", patience=ANSWER_SOON), DirectPipelines)
    assert isinstance(direct_pipelines("rediss://u:p%40ss@h/0", patience=ANSWER_SOON), DirectPipelines)
    # a cluster routes by slot, and query options are redis-py's to read: both keep redis-py's pipelines
    assert direct_pipelines("redis+cluster://h:7", patience=ANSWER_SOON) is None
    assert direct_pipelines("redis://h:7/0?socket_timeout=1", patience=ANSWER_SOON) is None
    r = aioredis.Redis()
    assert isinstance(pipelines_for("redis+cluster://h:7", r, patience=ANSWER_SOON), RedisPyPipelines)


async def test_the_connect_paths_commands_answer_as_through_redis_py(
        clients: tuple[aioredis.Redis, DirectPipelines]) -> None:
    r, direct = clients
    await r.hset("tok", mapping={"id": "t1", "max_sockets": "5"})
    report = r.register_script(NODE_REPORT_LUA)
    await report(keys=KEYS.fleet, args=NodeReport("n1", "register", 60_000, fqdn="n1.test:1", capacity=10).args(KEYS))
    sha = await r.script_load(PICK_NODE_LUA)

    expires_at_ms = int(time.time() * 1000) + 10_000

    def request(n: int) -> bytes:
        return EstablishRequest(id=f"r{n}", socket=f"s{n}", target="ws://t.test/", protocols=[],
                                expires_at_ms=expires_at_ms, token_id="t1").encode()

    def commands(n: int) -> list[tuple[str | bytes | int | float, ...]]:
        keys, args = pick_args(KEYS, "t1", 5, request(n), [n, n + 1], [])
        return [("HMGET", "tok", "id", "max_sockets", "absent"), ("INCR", "count"), ("EXPIRE", "count", 61),
                ("EVALSHA", sha, len(keys), *keys, *args), ("BLPOP", "no-reply", 0.01)]

    through_redis_py = await RedisPyPipelines(r).run(commands(1), blocks=True)
    direct_replies = await direct.run(commands(2), blocks=True)
    assert through_redis_py[0] == direct_replies[0] == [b"t1", b"5", None]
    assert (through_redis_py[1], direct_replies[1]) == (1, 2)
    assert bool(through_redis_py[2]) and direct_replies[2] == 1  # redis-py's callback makes it a bool
    assert through_redis_py[3] == direct_replies[3] == [b"ok", b"n1", b"n1.test:1"]
    assert through_redis_py[4] is None and direct_replies[4] is None
    assert await r.lrange(KEYS.inbox("n1"), 0, -1) == [request(1), request(2)]
    assert await r.zcard(KEYS.reservations("t1")) == 2
    await r.rpush("reply", b"done")
    assert await direct.run([("BLPOP", "reply", 0.01)], blocks=True) == [[b"reply", b"done"]]


async def clients_once_settled(r: aioredis.Redis, expected: int) -> int:
    """The connections Valkey lists, asked until they are ``expected`` (for at most 5 s): it reaps a
    closed connection when it reads its end, which a command on another connection may overtake."""
    for _ in range(50):
        if len(seen := await r.client_list()) == expected:
            break
        await asyncio.sleep(0.1)
    return len(seen)


class Opens:
    """Counts the connections ``direct`` opens from now on, and the most opening at once."""

    def __init__(self, direct: DirectPipelines) -> None:
        self.opened = self.opening = self.most_at_once = 0
        self._open = direct._open
        direct._open = self.counted  # type: ignore[assignment,method-assign]

    async def counted(self) -> object:
        self.opening, self.opened = self.opening + 1, self.opened + 1
        self.most_at_once = max(self.most_at_once, self.opening)
        try:
            return await self._open()
        finally:
            self.opening -= 1


@pytest.fixture
async def spared(clients: tuple[aioredis.Redis, DirectPipelines],
                 valkey: RestartableValkey) -> AsyncIterator[DirectPipelines]:
    """Pipelines as the router builds them: with a spare (``spare=True``)."""
    direct = direct_pipelines(valkey.url, patience=ANSWER_SOON, spare=True)
    assert direct is not None
    yield direct
    await direct.aclose()


async def test_the_first_pipeline_opens_the_blocking_ones_connection_beside_its_own(
        clients: tuple[aioredis.Redis, DirectPipelines], spared: DirectPipelines) -> None:
    """A new router's first connect runs the admission (shared connection) and then the pick
    (a blocking one): both connections are opened at once, so it waits for one handshake, not two."""
    r, direct = clients[0], spared
    before = len(await r.client_list())
    opens = Opens(direct)
    assert await direct.run([("RPUSH", "q", b"x")]) == [1]
    assert await direct.run([("BLPOP", "q", 1)], blocks=True) == [[b"q", b"x"]]
    assert (opens.opened, opens.most_at_once) == (2, 2)
    assert len(await r.client_list()) == before + 2
    await asyncio.gather(direct.run([("INCR", "n")]), direct.run([("BLPOP", "q", 0.01)], blocks=True))
    assert opens.opened == 2  # both reused
    await direct.aclose()
    assert await clients_once_settled(r, before) == before


async def test_a_spare_that_does_not_open_holds_no_pipeline_up(spared: DirectPipelines) -> None:
    """A spare whose handshake hangs (caught by a Lambda freeze): the blocking pipeline waits for it
    only briefly (``SPARE_PATIENCE_S``), then opens its own; the spare is not cancelled by it."""
    direct = spared
    open_connection = direct._open
    never = asyncio.Event()
    opened = 0

    async def second_hangs() -> object:
        nonlocal opened
        opened += 1
        if opened == 2:
            await never.wait()
        return await open_connection()

    direct._open = second_hangs  # type: ignore[assignment,method-assign]
    assert await direct.run([("RPUSH", "q", b"x")]) == [1]
    async with asyncio.timeout(5 + SPARE_PATIENCE_S):  # bounds the test, not a performance figure
        assert await direct.run([("BLPOP", "q", 1)], blocks=True) == [[b"q", b"x"]]
    assert opened == 3
    spare = direct._spare
    assert spare is not None and not spare.done()  # still the next caller's, if it ever opens
    never.set()
    await asyncio.wait([spare], timeout=5)  # its own callback has run when this returns (registered first)
    assert direct._spare is None and len(direct._idle) == 2  # it opened after all: idle beside the other
    await direct.aclose()


async def test_spares_are_not_opened_again_while_they_fail_nor_kept_beside_dead_idle_ones(
        valkey: RestartableValkey) -> None:
    """Redis unreachable: the retries of a pipeline open one spare, not one per attempt (the
    recovering primary would get twice the handshakes). Connections that died idle (a restart)
    do not count as idle: the first connect after it opens both at once again."""
    patience = Patience(read_timeout_s=LONGEST_BLOCK_S + 1, retries=3, backoff_cap_s=0.05)
    direct = direct_pipelines(valkey.url, patience=patience, spare=True)
    assert direct is not None
    opens = Opens(direct)
    try:
        assert await direct.run([("RPUSH", "q", b"x")]) == [1]
        assert await direct.run([("BLPOP", "q", 1)], blocks=True) == [[b"q", b"x"]]
        assert opens.opened == 2
        valkey.kill()
        await asyncio.sleep(0.2)  # the connections are seen closed
        with pytest.raises(RedisConnectionError):
            await direct.run([("PING",)])
        assert opens.opened == 2 + 4 + 1  # four attempts at the shared connection, one spare beside the first
        valkey.start()
        opens = Opens(direct)
        assert await direct.run([("RPUSH", "q", b"y")]) == [1]
        assert await direct.run([("BLPOP", "q", 1)], blocks=True) == [[b"q", b"y"]]
        assert (opens.opened, opens.most_at_once) == (2, 1)  # one after the other: no spare until one opened
        valkey.restart_empty()
        await asyncio.sleep(0.2)  # both connections are seen dead while idle
        opens = Opens(direct)
        assert await direct.run([("RPUSH", "q", b"z")]) == [1]
        assert await direct.run([("BLPOP", "q", 1)], blocks=True) == [[b"q", b"z"]]
        assert (opens.opened, opens.most_at_once) == (2, 2)
    finally:
        await direct.aclose()


async def test_a_reply_error_comes_in_its_place(clients: tuple[aioredis.Redis, DirectPipelines]) -> None:
    _, direct = clients
    replies = await direct.run([("INCR", "a"), ("EVALSHA", "0" * 40, 0), ("HSET", "h"), ("INCR", "a")])
    assert replies[0] == 1 and replies[3] == 2
    assert isinstance(replies[1], NoScriptError)  # the establisher loads the script and picks again
    assert type(replies[2]) is ResponseError and "wrong number of arguments" in str(replies[2])
    assert await direct.run([("INCR", "a")]) == [3]  # the connection still answers in order


async def test_many_callers_on_the_shared_connection_each_get_their_own_replies(
        clients: tuple[aioredis.Redis, DirectPipelines]) -> None:
    r, direct = clients

    async def one(i: int) -> None:
        if i % 7 == 0:  # blocking ones among them, on connections of their own
            assert await direct.run([("INCRBY", f"k{i}", i), ("BLPOP", f"q{i}", 0.01)], blocks=True) == [i, None]
        else:
            assert await direct.run([("INCRBY", f"k{i}", i), ("GET", f"k{i}")]) == [i, b"%d" % i]

    await asyncio.gather(*(one(i) for i in range(1, 401)))
    clients_seen = (await r.client_list())
    assert len(clients_seen) <= 1 + 1 + 58  # this test's redis-py, the shared one, at most one per blocking caller


async def test_a_restart_is_waited_out_on_a_fresh_connection(valkey: RestartableValkey,
                                                             clients: tuple[aioredis.Redis, DirectPipelines]) -> None:
    _, direct = clients
    assert await direct.run([("INCR", "n")]) == [1]
    assert await direct.run([("BLPOP", "q", 0.01)], blocks=True) == [None]
    valkey.restart_empty()
    assert await direct.run([("INCR", "n")]) == [1]  # a new, empty Valkey: the count starts again
    assert await direct.run([("BLPOP", "q", 0.01)], blocks=True) == [None]


async def test_a_stalled_server_times_out_every_waiting_caller_then_recovers(valkey: RestartableValkey) -> None:
    patience = Patience(read_timeout_s=LONGEST_BLOCK_S + 0.2, retries=0, backoff_cap_s=0.1)
    direct = direct_pipelines(valkey.url, patience=patience)
    assert direct is not None
    r = aioredis.Redis.from_url(valkey.url)
    try:
        assert await direct.run([("PING",)]) == [b"PONG"]
        assert await direct.run([("BLPOP", "q", 0.01)], blocks=True) == [None]  # an idle connection of its own
        assert len(await r.client_list()) == 3
        valkey.proc.signal(signal.SIGSTOP)
        try:
            outcomes = await asyncio.gather(*(direct.run([("INCR", "x")]) for _ in range(5)),
                                            return_exceptions=True)
        finally:
            valkey.proc.signal(signal.SIGCONT)
        assert all(isinstance(o, RedisTimeoutError) for o in outcomes), outcomes
        # The idle connection beside it was closed too, not left to cost the next blocking pipeline
        # a read timeout of its own (a frozen Lambda behind a NAT finds them all dead at once).
        assert await clients_once_settled(r, 1) == 1
        # the stalled connection was dropped: its late answers cannot be taken for the next caller's
        assert await direct.run([("GET", "x")]) == [b"5"]
        assert await direct.run([("INCR", "x")]) == [6]
    finally:
        await direct.aclose()
        await r.aclose()


async def test_a_caller_that_gives_up_leaves_no_connection_behind(
        clients: tuple[aioredis.Redis, DirectPipelines]) -> None:
    r, direct = clients
    before = len(await r.client_list())
    waiting = asyncio.create_task(direct.run([("BLPOP", "never", 1.5)], blocks=True))
    await asyncio.sleep(0.2)
    assert len(await r.client_list()) == before + 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # closed: its BLPOP's late reply would confuse the next caller
    assert await clients_once_settled(r, before) == before
    await r.rpush("never", b"late")
    assert await direct.run([("LPOP", "never")], blocks=True) == [b"late"]


async def test_a_wrong_password_is_said_at_once_and_not_retried() -> None:
    v = RestartableValkey(extra=["--requirepass", "right-password"])
    try:
        url = f"redis://:wrong-password@127.0.0.1:{v.port}/0"
        direct = direct_pipelines(url, patience=Patience(read_timeout_s=3.0, retries=50, backoff_cap_s=1.0))
        assert direct is not None
        opened = 0
        open_connection = direct._open

        async def counted() -> object:
            nonlocal opened
            opened += 1
            return await open_connection()

        direct._open = counted  # type: ignore[assignment,method-assign]
        with pytest.raises(AuthenticationError):
            await direct.run([("PING",)])
        assert opened == 1  # refused credentials are not retried (50 retries would take over 40 s)
        good = direct_pipelines(f"redis://:right-password@127.0.0.1:{v.port}/0", patience=ANSWER_SOON)
        assert good is not None
        assert await good.run([("PING",)]) == [b"PONG"]
        await good.aclose()
        no_password = direct_pipelines(v.url, patience=ANSWER_SOON)
        assert no_password is not None
        replies = await no_password.run([("PING",)])
        assert isinstance(replies[0], AuthenticationError)  # NOAUTH, typed as redis-py types it
        await no_password.aclose()
    finally:
        v.stack.stop()


async def test_a_script_redis_lost_is_loaded_and_run_once(clients: tuple[aioredis.Redis, DirectPipelines]) -> None:
    """The relay's answer (``REPLY_LUA``) after Redis restarted or flushed its scripts: redis-py loads
    it and runs it; ``NOSCRIPT`` ran nothing, so the reply is pushed once."""
    r, direct = clients
    script = r.register_script(REPLY_LUA)
    keys = [KEYS.reply("q1"), KEYS.abandoned("q1")]
    args: list[bytes | int] = [b"answer", 60]
    assert not await run_script(direct, script, keys, args)  # not loaded yet: NOSCRIPT, then loaded
    await r.set(KEYS.abandoned("q1"), b"1")
    assert await run_script(direct, script, keys, args)  # loaded: by its SHA; the router gave up
    await r.script_flush()
    assert await run_script(direct, script, keys, args)
    assert await r.lrange(KEYS.reply("q1"), 0, -1) == [b"answer"] * 3


async def test_the_routers_pipelines_open_a_spare_and_others_do_not_by_default() -> None:
    """``spare=True`` where every connect runs both kinds (the router: router_fn.app); not by
    default, as a relay builds them (relay_node.node: its inbox loop holds its blocking connection)."""
    router = create_app(RouterSettings(redis_url="redis://127.0.0.1:1/0")).router
    pipelines = router._connect_pipelines()
    assert isinstance(pipelines, DirectPipelines) and pipelines._spare_wanted
    relays = direct_pipelines("redis://127.0.0.1:1/0", patience=ANSWER_SOON)
    assert relays is not None and not relays._spare_wanted
    await pipelines.aclose()
    await router.close()
