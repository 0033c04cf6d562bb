"""The router awaits a node's first replies behind its pick, in one round trip
(bench/PERF_LEDGER.md, ``replies-behind-pick``), on a real Valkey with a node registered through
the real report script. A fast node's answer is the reply popped, an acking node's ack; a slow
node's are waited for as before; a Redis that lost its scripts still gets the request, once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from polysocket_core.control import NODE_REPORT_LUA, PICK_NODE_LUA, EstablishReply, Keys, NodeReport
from router_fn.admission import Admitted
from router_fn.establish import PIPELINED_WAIT_S, Establisher

pytestmark = pytest.mark.stack

KEYS = Keys("rbp:")
NODE = "n1"


@pytest.fixture
async def r(valkey_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(valkey_url)
    await client.flushall()
    report = client.register_script(NODE_REPORT_LUA)
    await report(keys=KEYS.fleet, args=NodeReport(NODE, "register", 60_000, fqdn=f"{NODE}.test:1",
                                                  capacity=10).args(KEYS))
    await client.script_load(PICK_NODE_LUA)  # as after a router's first connect
    yield client
    await client.aclose()


async def test_a_fast_nodes_answer_comes_back_with_the_pick(r: aioredis.Redis) -> None:
    est = Establisher(r, KEYS, 2.0, 5.0)
    done = EstablishReply(phase="done", ok=True, protocol="p")
    # The node has answered (once: its open was fast) before the BLPOP runs (it follows the pick
    # on the same connection).
    await r.rpush(KEYS.reply("req1"), done.encode())
    picked, early = await est.pick_and_wait([], Admitted(), b'{"id": "req1"}', KEYS.reply("req1"))
    assert picked == (NODE, f"{NODE}.test:1")
    assert [x.phase for x in early] == ["done"] and early[0].protocol == "p"
    assert await r.lrange(KEYS.inbox(NODE), 0, -1) == [b'{"id": "req1"}']
    assert await est._await_reply(NODE, "req1", b"", Admitted(), time.monotonic() + 5, early) == done


async def test_an_acking_nodes_answer_is_waited_for_after_its_ack(r: aioredis.Redis) -> None:
    """A slow open (or a node of the previous release) acks first: the ack comes back with the
    pick, the answer is the next reply."""
    est = Establisher(r, KEYS, 2.0, 5.0)
    ack, done = EstablishReply(phase="ack"), EstablishReply(phase="done", ok=True, protocol="p")
    await r.rpush(KEYS.reply("req5"), ack.encode(), done.encode())
    picked, early = await est.pick_and_wait([], Admitted(), b"req5", KEYS.reply("req5"))
    assert picked is not None and early == [ack]
    assert await est._await_reply(NODE, "req5", b"req5", Admitted(), time.monotonic() + 5, early) == done


async def test_a_slow_node_is_waited_for_after_the_pick(r: aioredis.Redis) -> None:
    est = Establisher(r, KEYS, 2.0, 5.0)
    picked, early = await est.pick_and_wait([], Admitted(), b"req2", KEYS.reply("req2"))
    assert picked is not None and early == []
    assert await r.lrange(KEYS.inbox(NODE), 0, -1) == [b"req2"]
    # what _await_reply then does: the ack budget less the short wait already spent
    assert est.ack_timeout_s > PIPELINED_WAIT_S


async def test_a_redis_that_lost_its_scripts_gets_the_request_once(r: aioredis.Redis) -> None:
    est = Establisher(r, KEYS, 2.0, 5.0)
    await r.script_flush()
    picked, early = await est.pick_and_wait([], Admitted(), b"req3", KEYS.reply("req3"))
    assert picked == (NODE, f"{NODE}.test:1") and early == []
    assert await r.lrange(KEYS.inbox(NODE), 0, -1) == [b"req3"]
    picked, _ = await est.pick_and_wait([], Admitted(), b"req4", KEYS.reply("req4"))  # loaded again
    assert picked is not None and await r.lrange(KEYS.inbox(NODE), 0, -1) == [b"req3", b"req4"]
