"""Redis holds carry an expiry: the tokens held by a replica that stops renewing them (it
died) go back to the bucket after ``reservation_ttl_s``; a live replica renews its own."""

from __future__ import annotations

import pytest
import redis

from hydraguard.budgets import RedisBudgetState, WindowSpec

from .redis_util import FakeClock, delete_prefix, require_redis, unique_prefix

pytestmark = pytest.mark.redis

D = WindowSpec("day", 1000, 86_400.0)


@pytest.fixture
async def pair():
    """Two replicas on one Redis and one fake clock (TTL 60 s)."""
    url = require_redis()
    prefix = unique_prefix()
    clock = FakeClock()
    states = [RedisBudgetState(url, prefix=prefix, clock=clock, reservation_ttl_s=60,
                               on_error="closed") for _ in range(2)]
    yield states[0], states[1], clock, url, prefix
    for st in states:
        await st.close()
    delete_prefix(url, prefix)


async def test_holds_of_a_dead_replica_are_given_back_after_the_ttl(pair):
    a, b, clock, _, _ = pair
    held = [await a.reserve("k", (D,), 300, group="g") for _ in range(3)]
    assert [r.ok for r in held] == [True, True, True]
    # replica a dies here: it neither settles nor renews
    clock.advance(59.0)
    assert not (await b.reserve("k", (D,), 300, group="g")).ok  # still held: 100 left
    clock.advance(1.0)  # 60 s after they were taken
    r = await b.reserve("k", (D,), 300, group="g")
    assert r.ok  # the 900 came back (refill over 60 s is ~0.7 tokens)
    assert r.windows[0].remaining == pytest.approx(1000 - 300, abs=1)


async def test_a_live_replica_renews_its_holds(pair):
    a, b, clock, _, _ = pair
    r = await a.reserve("k", (D,), 600, group="g")
    for _ in range(5):  # 100 s in all, renewed every 20 s (a third of the TTL)
        clock.advance(20.0)
        assert await a.renew() == 1
    assert not (await b.reserve("k", (D,), 600, group="g")).ok  # still held
    assert await a.commit(r.reservation, 50)
    left = (await b.peek("k", (D,), group="g"))[0].remaining
    assert left == pytest.approx(950 + 100 * 1000 / 86_400)


async def test_late_settle_of_an_expired_hold_charges_the_usage_once(pair):
    """A replica cut off from Redis for longer than the TTL: its hold was given back, so
    its late commit charges the real usage in full; a second settle changes nothing."""
    a, b, clock, url, prefix = pair
    r = await a.reserve("k", (D,), 400, group="g")
    clock.advance(61.0)
    assert (await b.peek("k", (D,), group="g"))[0].remaining == pytest.approx(1000)
    assert await a.commit(r.reservation, 250) is True
    assert await a.commit(r.reservation, 250) is False
    assert await b.release(r.reservation) is False
    left = (await b.peek("k", (D,), group="g"))[0].remaining
    assert left == pytest.approx(750)
    c = redis.Redis.from_url(url, decode_responses=True)
    try:
        base = f"{prefix}:v3:{{g}}:k"
        assert [f for f in c.hkeys(f"{base}:b") if f[:2] in ("r:", "x:")] == []
        assert c.zcard(f"{base}:h") == 0
    finally:
        c.close()


async def test_expired_markers_are_deleted_after_another_ttl(pair):
    a, b, clock, url, prefix = pair
    await a.reserve("k", (D,), 10, group="g")
    clock.advance(61.0)
    await b.peek("k", (D,), group="g")  # gives the hold back, leaves a marker
    c = redis.Redis.from_url(url, decode_responses=True)
    base = f"{prefix}:v3:{{g}}:k"
    try:
        assert len([f for f in c.hkeys(f"{base}:b") if f.startswith("x:")]) == 1
        clock.advance(61.0)
        await b.peek("k", (D,), group="g")
        assert [f for f in c.hkeys(f"{base}:b") if f[:2] in ("r:", "x:")] == []
        assert c.zcard(f"{base}:h") == 0
    finally:
        c.close()


async def test_settle_through_another_replica_and_refused_reserve_reclaims(pair):
    a, b, clock, _, _ = pair
    r1 = await a.reserve("k", (D,), 700, group="g")
    assert await b.commit(r1.reservation, 100) is True  # any replica may settle, once
    assert await a.commit(r1.reservation, 100) is False
    r2 = await a.reserve("k", (D,), 800, group="g")
    assert r2.ok
    clock.advance(60.0)
    # a refused reserve still gives the expired hold back: 800 + 100 then 100 - refill
    r3 = await b.reserve("k", (D,), 950, group="g")
    assert not r3.ok
    assert r3.windows[0].remaining == pytest.approx(900 + 60 * 1000 / 86_400)
