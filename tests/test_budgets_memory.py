"""Memory backend: bounds, expiry, URI factory, and a property test of the bucket math."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydraguard.budgets import (
    BudgetState,
    MemoryBudgetState,
    RedisBudgetState,
    WindowSpec,
)

try:
    from redis_util import FakeClock
except ImportError:  # tests/ turned into a package
    from tests.redis_util import FakeClock

M = WindowSpec("minute", 100, 60.0)
H = WindowSpec("hour", 1000, 3600.0)


async def test_max_keys_bound_lru():
    clock = FakeClock()
    s = MemoryBudgetState(max_keys=100, clock=clock)
    for i in range(1000):
        assert (await s.reserve(f"k{i}", (M,), 1)).ok
    assert len(s) == 100
    # the most recent keys survived, the oldest were evicted (and start full again)
    assert (await s.peek("k999", (M,)))[0].remaining == 99.0
    assert (await s.peek("k0", (M,)))[0].remaining == 100.0


async def test_keys_expire_after_longest_window():
    clock = FakeClock()
    s = MemoryBudgetState(max_keys=100, clock=clock)
    await s.reserve("k", (M, H), 50)
    clock.advance(3599.0)
    assert len(s) == 1
    clock.advance(2.0)
    assert len(s) == 0


async def test_overcharged_key_lives_until_drained():
    clock = FakeClock()
    s = MemoryBudgetState(max_keys=100, clock=clock)
    r = await s.reserve("k", (M,), 10)
    await s.commit(r.reservation, 300)  # level 300 drains in 180 s
    clock.advance(170.0)
    assert len(s) == 1
    assert (await s.peek("k", (M,)))[0].remaining == pytest.approx(100 - (300 - 170 * 100 / 60))
    clock.advance(11.0)
    assert len(s) == 0


async def test_open_reservation_settles_however_long_the_response_takes():
    """Memory holds die with their process, the only one that can settle them: no expiry
    (a response may stream for longer than any TTL)."""
    clock = FakeClock()
    s = MemoryBudgetState(max_keys=100, clock=clock)
    r = await s.reserve("k", (H,), 500)
    clock.advance(7200.0)
    assert await s.commit(r.reservation, 100) is True
    assert await s.commit(r.reservation, 100) is False
    assert (await s.peek("k", (H,)))[0].remaining == pytest.approx(1000)  # drained by now


async def test_max_pending_bound_drops_oldest_which_stays_charged():
    clock = FakeClock()
    s = MemoryBudgetState(max_keys=100, clock=clock, max_pending=3)
    rs = [(await s.reserve("k", (H,), 100)).reservation for _ in range(5)]
    assert s.pending == 3
    assert await s.commit(rs[0], 0) is False  # dropped: its 100 tokens stay charged
    assert await s.commit(rs[1], 0) is False
    assert await s.commit(rs[4], 0) is True  # a refund of 100
    assert (await s.peek("k", (H,)))[0].remaining == pytest.approx(1000 - 400)
    assert s.pending == 2


async def test_atomic_under_gather():
    clock = FakeClock()
    s = MemoryBudgetState(clock=clock)
    w = WindowSpec("w", 1000, 3600.0)

    async def one():
        r = await s.reserve("c", (w,), 10)
        if r.ok:
            await asyncio.sleep(0)
            await s.commit(r.reservation, 10)
            return 10
        return 0

    spent = await asyncio.gather(*(one() for _ in range(200)))
    assert sum(spent) == 1000


async def test_one_factory_builds_either_backend():
    from hydraguard.budgets.backends import open_state
    from hydraguard.policy.budget_model import StateConfig

    m = open_state(StateConfig(max_keys=7), FakeClock())
    assert isinstance(m, MemoryBudgetState) and isinstance(m, BudgetState)
    assert m.max_keys == 7
    r = open_state(StateConfig(backend="redis", redis_url="redis://127.0.0.1:1/0", prefix="x"),
                   FakeClock())  # lazy: no connection yet
    assert isinstance(r, RedisBudgetState) and isinstance(r, BudgetState)
    await r.close()
    with pytest.raises(ValueError):
        open_state(StateConfig(backend="redis", redis_url="postgres://db"), FakeClock())


async def test_validation_of_actual():
    s = MemoryBudgetState(clock=FakeClock())
    r = await s.reserve("k", (M,), 1)
    with pytest.raises(ValueError):
        await s.commit(r.reservation, -1)


ops = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=40.0),  # time step
        st.integers(min_value=0, max_value=130),  # amount to reserve
        st.sampled_from(["commit_less", "commit_same", "release", "keep"]),
        st.integers(min_value=0, max_value=100),  # fraction of the reservation used
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_property_retry_after_is_exact_and_levels_stay_in_range(seq):
    """When actual <= reserved: remaining always stays in [0, limit]; a refused (fitting)
    request succeeds exactly retry_after_s later and not noticeably earlier."""
    clock = FakeClock(0.0)
    s = MemoryBudgetState(clock=clock)
    ws = (WindowSpec("a", 100, 60.0), WindowSpec("b", 300, 600.0))
    for dt, amount, action, pct in seq:
        clock.advance(dt)
        r = s.reserve_nowait("k", ws, amount)
        for w in r.windows:
            assert -1e-6 <= w.remaining <= w.limit + 1e-6
        if r.never_fits:
            assert amount > 100 and r.retry_after_s == 60.0
            continue
        if not r.ok:
            assert r.retry_after_s > 0
            if r.retry_after_s > 1e-3:
                early = s.reserve_nowait("k", ws, amount, now=clock.t + r.retry_after_s * 0.999)
                assert not early.ok
            clock.advance(r.retry_after_s)
            r = s.reserve_nowait("k", ws, amount)
            assert r.ok, "must fit exactly retry_after_s later"
        res = r.reservation
        if action == "commit_less":
            assert s.settle_nowait(res, amount * pct // 100)
        elif action == "commit_same":
            assert s.settle_nowait(res, amount)
        elif action == "release":
            assert s.settle_nowait(res, 0)
        if action != "keep":
            assert not s.settle_nowait(res, 0), "second settle must be a no-op"
