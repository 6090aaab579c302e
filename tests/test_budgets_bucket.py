"""Bucket semantics, identical for both backends (memory and Redis)."""

from __future__ import annotations

import pytest

from hydraguard.budgets import (
    MemoryBudgetState,
    RedisBudgetState,
    WindowSpec,
)

try:
    from redis_util import FakeClock, delete_prefix, require_redis, unique_prefix
except ImportError:  # tests/ turned into a package
    from tests.redis_util import FakeClock, delete_prefix, require_redis, unique_prefix

M = WindowSpec("minute", 100, 60.0)  # 100/60 tokens per second
H = WindowSpec("hour", 150, 3600.0)  # 150/3600 tokens per second
APPROX = {"rel": 1e-9, "abs": 1e-9}


def approx(x: float):
    return pytest.approx(x, **APPROX)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_state(request):
    """Factory: make_state() -> (state, clock); further calls give another replica that
    shares the same store (same Redis prefix / same memory object)."""
    kind = request.param
    created = []
    clock = FakeClock()
    prefix = unique_prefix()
    url = require_redis() if kind == "redis" else None
    shared_mem = MemoryBudgetState(max_keys=1000, clock=clock) if kind == "memory" else None

    def factory():
        if kind == "memory":
            return shared_mem, clock
        # holds outlive the fake clock's jumps (expiry has its own tests in test_budgets_redis)
        st = RedisBudgetState(url, prefix=prefix, timeout_ms=1000, on_error="closed",
                              clock=clock, reservation_ttl_s=10**7)
        created.append(st)
        return st, clock

    yield factory
    for st in created:
        await st.close()
    if kind == "redis":
        delete_prefix(url, prefix)


def remaining(result_or_states):
    states = getattr(result_or_states, "windows", result_or_states)
    return {w.name: w.remaining for w in states}


async def test_reserve_within_limit_reports_states(make_state):
    st, _clock = make_state()
    r = await st.reserve("acct:a", (M, H), 60)
    assert r.ok and not r.never_fits and not r.degraded
    assert r.retry_after_s == 0.0
    assert r.reservation is not None and r.reservation.amount == 60
    assert r.reservation.key == "acct:a" and r.reservation.windows == (M, H)
    w_m, w_h = r.windows
    assert (w_m.name, w_m.limit, w_m.remaining, w_m.reset_s) == ("minute", 100, 40.0, approx(36.0))
    assert (w_h.name, w_h.limit, w_h.remaining) == ("hour", 150, 90.0)
    assert w_h.reset_s == approx(60 / (150 / 3600))  # 1440 s


async def test_peek_unknown_key_is_full_and_changes_nothing(make_state):
    st, _clock = make_state()
    states = await st.peek("nobody", (M, H))
    assert remaining(states) == {"minute": 100.0, "hour": 150.0}
    assert [w.reset_s for w in states] == [0.0, 0.0]
    await st.reserve("k", (M,), 30)
    for _ in range(3):
        assert remaining(await st.peek("k", (M,))) == {"minute": 70.0}


async def test_continuous_refill_and_exact_retry_after(make_state):
    st, clock = make_state()
    assert (await st.reserve("k", (M,), 100)).ok
    r = await st.reserve("k", (M,), 30)
    assert not r.ok and not r.never_fits and r.reservation is None
    assert r.retry_after_s == approx(18.0)  # 30 tokens at 100/60 per s
    assert remaining(r) == {"minute": 0.0}
    clock.advance(17.9)
    assert not (await st.reserve("k", (M,), 30)).ok
    clock.advance(0.1)
    r = await st.reserve("k", (M,), 30)
    assert r.ok
    assert remaining(r)["minute"] == approx(0.0)
    clock.advance(30.0)
    assert remaining(await st.peek("k", (M,)))["minute"] == approx(50.0)


async def test_no_double_burst_at_window_boundary(make_state):
    st, clock = make_state()
    clock.t = 59.9
    assert (await st.reserve("k", (M,), 100)).ok
    clock.t = 60.1  # a fixed window would reset here and allow another 100
    r = await st.reserve("k", (M,), 100)
    assert not r.ok
    assert r.retry_after_s == approx(60.0 - 0.2)
    assert remaining(r)["minute"] == approx(0.2 * 100 / 60)


async def test_multi_window_all_or_nothing(make_state):
    st, clock = make_state()
    assert (await st.reserve("k", (M, H), 100)).ok
    clock.advance(60.0)  # minute full again, hour refilled by 2.5
    r = await st.reserve("k", (M, H), 60)
    assert not r.ok and not r.never_fits
    assert remaining(r) == {"minute": approx(100.0), "hour": approx(52.5)}
    # hour needs 60 - 52.5 = 7.5 more tokens at 150/3600 per s
    assert r.retry_after_s == approx(180.0)
    # nothing was charged to the minute window either
    assert remaining(await st.peek("k", (M, H))) == {"minute": approx(100.0), "hour": approx(52.5)}
    clock.advance(180.0)
    r = await st.reserve("k", (M, H), 60)
    assert r.ok
    assert remaining(r) == {"minute": approx(40.0), "hour": approx(0.0)}


async def test_retry_after_is_max_over_windows(make_state):
    st, _clock = make_state()
    tight = WindowSpec("tight", 10, 10.0)  # 1 token/s
    slow = WindowSpec("slow", 20, 100.0)  # 0.2 token/s
    assert (await st.reserve("k", (tight, slow), 10)).ok
    r = await st.reserve("k", (tight, slow), 5)
    # tight: needs 5 → 5 s; slow: level 10, needs 10+5-20 = -5 → fits now
    assert not r.ok and r.retry_after_s == approx(5.0)
    r = await st.reserve("k", (tight, slow), 10)
    # tight: 10 s; slow: 0 → 10 s
    assert r.retry_after_s == approx(10.0)


async def test_never_fits(make_state):
    st, _clock = make_state()
    r = await st.reserve("k", (M, H), 101)
    assert not r.ok and r.never_fits and r.reservation is None
    assert r.retry_after_s == 60.0
    r = await st.reserve("k", (M, H), 151)
    assert r.never_fits and r.retry_after_s == 3600.0
    assert remaining(await st.peek("k", (M, H))) == {"minute": 100.0, "hour": 150.0}
    # exactly the limit fits
    assert (await st.reserve("k", (M,), 100)).ok


async def test_commit_refunds_difference(make_state):
    st, _clock = make_state()
    r = await st.reserve("k", (M, H), 80)
    assert await st.commit(r.reservation, 30) is True
    assert remaining(await st.peek("k", (M, H))) == {"minute": 70.0, "hour": 120.0}


async def test_commit_charges_extra_and_goes_negative(make_state):
    st, clock = make_state()
    r = await st.reserve("k", (M,), 50)
    assert await st.commit(r.reservation, 120)
    states = await st.peek("k", (M,))
    assert states[0].remaining == approx(-20.0)
    assert states[0].reset_s == approx(72.0)  # 120 tokens at 100/60 per s
    r2 = await st.reserve("k", (M,), 1)
    assert not r2.ok and r2.retry_after_s == approx(21 / (100 / 60))  # 12.6 s
    clock.advance(12.6)
    assert (await st.reserve("k", (M,), 1)).ok


async def test_commit_equal_amount_keeps_level(make_state):
    st, _clock = make_state()
    r = await st.reserve("k", (M,), 40)
    assert await st.commit(r.reservation, 40)
    assert remaining(await st.peek("k", (M,))) == {"minute": 60.0}


async def test_commit_after_refill_clamps_at_full(make_state):
    st, clock = make_state()
    r = await st.reserve("k", (M,), 100)
    clock.advance(30.0)  # level 50
    assert await st.commit(r.reservation, 40)  # -60 → clamped at 0 (bucket full)
    assert remaining(await st.peek("k", (M,))) == {"minute": approx(100.0)}


async def test_release_returns_everything(make_state):
    st, _clock = make_state()
    r = await st.reserve("k", (M, H), 70)
    assert await st.release(r.reservation) is True
    assert remaining(await st.peek("k", (M, H))) == {"minute": 100.0, "hour": 150.0}


async def test_commit_and_release_are_idempotent(make_state):
    st, _clock = make_state()
    r1 = await st.reserve("k", (M,), 40)
    r2 = await st.reserve("k", (M,), 40)
    assert await st.commit(r1.reservation, 10) is True
    assert await st.commit(r1.reservation, 10) is False
    assert await st.commit(r1.reservation, 90) is False
    assert await st.release(r1.reservation) is False  # response then error: no double refund
    assert await st.release(r2.reservation) is True
    assert await st.release(r2.reservation) is False
    assert await st.commit(r2.reservation, 40) is False
    assert remaining(await st.peek("k", (M,))) == {"minute": 90.0}


async def test_commit_through_other_replica(make_state):
    a, _clock = make_state()
    b, _ = make_state()
    r = await a.reserve("k", (M,), 60)
    assert await b.commit(r.reservation, 20) is True
    assert await a.commit(r.reservation, 20) is False
    assert remaining(await a.peek("k", (M,))) == {"minute": 80.0}


async def test_keys_are_independent(make_state):
    st, _clock = make_state()
    assert (await st.reserve("a", (M,), 100)).ok
    assert (await st.reserve("b", (M,), 100)).ok
    assert not (await st.reserve("a", (M,), 1)).ok


async def test_awkward_keys_work(make_state):
    st, _clock = make_state()
    for key in ("with space", "{brace}", "ü" * 300, "a|b=c"):
        assert (await st.reserve(key, (M,), 100)).ok
        assert not (await st.reserve(key, (M,), 1)).ok


async def test_zero_amount_and_validation(make_state):
    st, _clock = make_state()
    assert (await st.reserve("k", (M,), 0)).ok
    assert (await st.reserve("k", (M,), 100)).ok
    assert (await st.reserve("k", (M,), 0)).ok  # level == limit still admits 0
    with pytest.raises(ValueError):
        await st.reserve("k", (M,), -1)
    with pytest.raises(ValueError):
        await st.reserve("k", (), 1)
    with pytest.raises(ValueError):
        await st.reserve("k", (M, WindowSpec("minute", 5, 1.0)), 1)


async def test_lagging_replica_clock_never_refills_twice(make_state):
    st, clock = make_state()
    clock.t = 100.0  # the memory backend's expiry runs on its clock: keep them aligned
    assert (await st.reserve("k", (M,), 100, now=100.0)).ok
    # a replica whose clock is 10 s behind: no refill (not negative time)
    r = await st.reserve("k", (M,), 1, now=90.0)
    assert not r.ok
    assert remaining(r)["minute"] == approx(0.0)
    # and the interval 90..100 is not refilled again later
    assert remaining(await st.peek("k", (M,), now=130.0))["minute"] == approx(50.0)


def test_window_spec_validation():
    with pytest.raises(ValueError):
        WindowSpec("x", 0, 1.0)
    with pytest.raises(ValueError):
        WindowSpec("x", 10, 0.0)
    with pytest.raises(ValueError):
        WindowSpec("", 10, 1.0)
    assert WindowSpec("x", 10, 5.0).rate == 2.0
