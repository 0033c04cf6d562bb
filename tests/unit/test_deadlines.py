"""The sweep's due queue (relay_node/sockets/deadlines.py): earliest first, later times lazy,
earlier ones taken, removed keys never popped, stale entries bounded; against a brute-force model."""

from __future__ import annotations

import random

from relay_node.sockets.deadlines import DueQueue


def test_keys_pop_when_due_earliest_first() -> None:
    q: DueQueue[str] = DueQueue()
    q.schedule("b", 5.0)
    q.schedule("a", 3.0)
    q.schedule("c", 9.0)
    assert q.pop_due(2.9) == []
    assert q.pop_due(5.0) == ["a", "b"]
    assert "a" not in q and "c" in q and len(q) == 1
    assert q.next_due() == 9.0


def test_a_later_time_is_ignored_an_earlier_one_taken() -> None:
    q: DueQueue[str] = DueQueue()
    q.schedule("a", 10.0)
    q.schedule("a", 20.0)  # later: the owner finds out when 10 comes
    assert q.due_at("a") == 10.0
    q.schedule("a", 4.0)  # earlier: due then
    assert q.pop_due(4.0) == ["a"]
    assert q.pop_due(100.0) == []  # the entry at 10 is stale, not a second visit


def test_a_discarded_key_never_pops() -> None:
    q: DueQueue[str] = DueQueue()
    q.schedule("a", 1.0)
    q.discard("a")
    q.discard("a")  # twice: no error
    assert q.pop_due(5.0) == [] and q.next_due() is None


def test_stale_entries_stay_bounded_under_churn() -> None:
    q: DueQueue[int] = DueQueue()
    for i in range(10_000):  # sockets come and go long before their deadline
        q.schedule(i, 1_000.0 + i)
        q.schedule(i, 500.0 + i)
        q.discard(i)
    assert len(q) == 0 and len(q._heap) <= 64 + 2


def test_against_a_brute_force_model() -> None:
    rng = random.Random(20)
    for _ in range(200):
        q: DueQueue[int] = DueQueue()
        model: dict[int, float] = {}
        now = 0.0
        for _ in range(200):
            op = rng.random()
            key = rng.randrange(12)
            if op < 0.5:
                at = now + rng.choice([0.0, 0.5, 1.0, 3.0, 7.5]) * rng.random()
                q.schedule(key, at)
                model[key] = min(model.get(key, at), at)
            elif op < 0.6:
                q.discard(key)
                model.pop(key, None)
            else:
                now += rng.random() * 2
                due = sorted((at, k) for k, at in model.items() if at <= now)
                got = q.pop_due(now)
                assert sorted(got) == sorted(k for _, k in due)
                assert [model[k] for k in got] == sorted(model[k] for k in got)  # earliest first
                for k in got:
                    del model[k]
            assert len(q) == len(model)
            assert q.next_due() == (min(model.values()) if model else None)
