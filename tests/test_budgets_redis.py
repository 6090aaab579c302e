"""Redis backend: key layout and TTLs, two replicas under concurrency, failure modes."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
import redis

from hydraguard.budgets import MemoryBudgetState, RedisBudgetState, WindowSpec
from hydraguard.budgets.backends import open_state
from hydraguard.budgets.redis_state import LAYOUT_VERSION as V
from hydraguard.policy.budget_model import StateConfig

try:
    from redis_util import (
        FakeClock,
        delete_prefix,
        free_port,
        keys_with_prefix,
        redis_server,
        require_redis,
        unique_prefix,
    )
except ImportError:  # tests/ turned into a package
    from tests.redis_util import (
        FakeClock,
        delete_prefix,
        free_port,
        keys_with_prefix,
        redis_server,
        require_redis,
        unique_prefix,
    )

pytestmark = pytest.mark.redis

M = WindowSpec("minute", 100, 60.0)
D = WindowSpec("day", 10_000, 86_400.0)


@pytest.fixture
def redis_prefix():
    url = require_redis()
    prefix = unique_prefix()
    yield url, prefix
    delete_prefix(url, prefix)


def state_records(caplog):
    return [r for r in caplog.records if r.name == "hydraguard.state"]


async def test_key_layout_hash_tag_and_ttls(redis_prefix):
    url, prefix = redis_prefix
    st = RedisBudgetState(url, prefix=prefix, clock=FakeClock(), reservation_ttl_s=600)
    try:
        r = await st.reserve("account=a1|model=x", (M, D), 10)
        assert r.ok
        keys = keys_with_prefix(url, prefix)
        base = f"{prefix}:v{V}:{{account=a1|model=x}}:"
        assert keys == sorted([f"{base}b", f"{base}r:{r.reservation.id}"])
        c = redis.Redis.from_url(url, decode_responses=True)
        try:
            assert set(c.hkeys(f"{base}b")) == {"minute:u", "minute:t", "day:u", "day:t"}
            assert 86_400_000 <= c.pttl(f"{base}b") <= 86_401_000  # longest period + 1 s
            assert 590_000 <= c.pttl(f"{base}r:{r.reservation.id}") <= 600_000
            assert await st.commit(r.reservation, 5)
            assert not c.exists(f"{base}r:{r.reservation.id}")
            # minute window only: TTL >= period, and follows an overcharge while it drains
            r = await st.reserve("solo", (M,), 10)
            assert 60_000 <= c.pttl(f"{prefix}:v{V}:{{solo}}:b") <= 61_000
            assert await st.commit(r.reservation, 150)  # level 150 in a 100/60 s bucket
            assert 90_000 <= c.pttl(f"{prefix}:v{V}:{{solo}}:b") <= 91_000  # 90 s to drain, +1 s
            # a later, smaller need never shortens the TTL
            r = await st.reserve("account=a1|model=x", (M,), 1)
            assert c.pttl(f"{base}b") > 86_000_000
            assert all(c.pttl(k) > 0 for k in keys_with_prefix(url, prefix))
        finally:
            c.close()
    finally:
        await st.close()


async def test_unsafe_cluster_key_is_hashed_into_one_hash_tag(redis_prefix):
    url, prefix = redis_prefix
    st = RedisBudgetState(url, prefix=prefix, clock=FakeClock())
    try:
        assert (await st.reserve("evil}{key with spaces", (M, D), 1)).ok
        keys = keys_with_prefix(url, prefix)
        assert len(keys) == 2
        for k in keys:
            assert k.count("{") == 1 and k.count("}") == 1 and " " not in k
        assert len({k.split("}")[0] for k in keys}) == 1
    finally:
        await st.close()


@pytest.mark.parametrize("overrun", [0, 3])
async def test_two_replicas_200_concurrent_never_overspend(redis_prefix, overrun):
    """200 concurrent reserve+commit tasks spread over two replicas sharing one Redis.
    With a frozen clock (no refill) the committed total can exceed the limit only by the
    estimate error (``overrun`` tokens per request beyond its reservation)."""
    url, prefix = redis_prefix
    clock = FakeClock()
    limit, estimate = 1000, 10
    w = WindowSpec("burst", limit, 3600.0)
    replicas = [
        RedisBudgetState(url, prefix=prefix, timeout_ms=5000, on_error="closed", clock=clock)
        for _ in range(2)
    ]
    rng = random.Random(42)
    committed: list[int] = []
    rejected = 0
    in_flight = 0
    max_in_flight = 0

    async def one(i: int) -> None:
        nonlocal in_flight, max_in_flight, rejected
        st = replicas[i % 2]
        r = await st.reserve("cluster:h-1", (w,), estimate)
        assert not r.degraded
        if not r.ok:
            rejected += 1
            return
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        await asyncio.sleep(0)
        actual = rng.randint(0, estimate) if overrun == 0 else estimate + overrun
        assert await st.commit(r.reservation, actual)
        in_flight -= 1
        committed.append(actual)

    try:
        await asyncio.gather(*(one(i) for i in range(200)))
        total = sum(committed)
        assert committed, "some requests must have been admitted"
        assert rejected > 0, "the limit must have been reached"
        assert max_in_flight > 1, "reservations must have overlapped"
        if overrun == 0:
            assert total <= limit
        else:
            # every admitted request overran by `overrun`; admitted <= limit / estimate
            assert len(committed) <= limit // estimate
            assert total <= limit + overrun * len(committed)
        left = (await replicas[0].peek("cluster:h-1", (w,)))[0].remaining
        assert left == pytest.approx(limit - total)
    finally:
        for st in replicas:
            await st.close()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_down_answers_per_on_error_and_logs_once(mode, caplog):
    caplog.set_level(logging.INFO, logger="hydraguard.state")
    url = f"redis://:pw-{mode}-s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    st = RedisBudgetState(
        url, prefix=unique_prefix(), timeout_ms=50, on_error=mode, clock=FakeClock()
    )
    try:
        t0 = time.perf_counter()
        results = [await st.reserve("k", (M,), 10) for _ in range(100)]
        elapsed = time.perf_counter() - t0
        assert all(r.degraded and r.reservation is None for r in results)
        if mode == "open":
            assert all(r.ok for r in results)
        else:
            assert not any(r.ok for r in results)
            assert all(0 < r.retry_after_s <= 2 for r in results)
        assert not st.healthy
        recs = state_records(caplog)
        assert len(recs) == 1, [r.getMessage() for r in recs]
        assert "DOWN" in recs[0].getMessage()
        assert f":***@127.0.0.1:{url.rsplit(':', 1)[1]}" in recs[0].getMessage()
        assert "s3cret" not in caplog.text  # the URL's password never reaches a log line
        assert elapsed < 1.0  # back-off: a dead Redis is not retried on every request
        assert await st.peek("k", (M,)) == ()
    finally:
        await st.close()


async def test_operation_bounded_by_timeout_ms(caplog):
    """A server that accepts but never answers: each op gives up after ~timeout_ms."""
    caplog.set_level(logging.INFO, logger="hydraguard.state")

    async def black_hole(reader, writer):
        try:
            while await reader.read(4096):
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    st = RedisBudgetState(
        f"redis://127.0.0.1:{port}/0",
        prefix=unique_prefix(),
        timeout_ms=50,
        on_error="closed",
        down_backoff_s=0.0,
        clock=FakeClock(),
    )
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            r = await st.reserve("k", (M,), 1)
            assert (time.perf_counter() - t0) < 0.3
            assert not r.ok and r.degraded
        assert len(state_records(caplog)) == 1
    finally:
        await st.close()
        server.close()
        await server.wait_closed()


async def test_recovers_when_redis_comes_back(caplog):
    caplog.set_level(logging.INFO, logger="hydraguard.state")
    with redis_server() as srv:
        st = RedisBudgetState(
            srv.url,
            prefix="hg",
            timeout_ms=200,
            on_error="closed",
            down_backoff_s=0.1,
            clock=FakeClock(),
        )
        try:
            r = await st.reserve("k", (M,), 10)
            assert r.ok and not r.degraded
            srv.stop()
            down = [await st.reserve("k", (M,), 10) for _ in range(100)]
            assert all(x.degraded and not x.ok for x in down)
            srv.start()  # same port, empty data set
            await asyncio.sleep(0.15)
            r = await st.reserve("k", (M,), 10)
            assert r.ok and not r.degraded and r.reservation is not None
            assert st.healthy
            assert await st.commit(r.reservation, 5)
            msgs = [x.getMessage() for x in state_records(caplog)]
            assert len(msgs) == 2, msgs
            assert "DOWN" in msgs[0] and "RECOVERED" in msgs[1]
        finally:
            await st.close()


async def test_open_state_redis(redis_prefix):
    url, prefix = redis_prefix
    st = open_state(StateConfig(backend="redis", redis_url=url, prefix=prefix), FakeClock())
    try:
        assert isinstance(st, RedisBudgetState)
        assert (await st.reserve("k", (M,), 1)).ok
    finally:
        await st.close()
    with pytest.raises(ValueError):
        open_state(StateConfig(backend="redis", redis_url=url, on_error="maybe"), FakeClock())


async def test_lua_scripts_match_python_math(redis_prefix):
    """Differential test: a random operation sequence gives the same results (to 1e-6) on the
    Redis backend (Lua) and the memory backend (Python)."""
    url, prefix = redis_prefix
    clock = FakeClock(0.0)
    mem = MemoryBudgetState(clock=clock)
    red = RedisBudgetState(url, prefix=prefix, timeout_ms=2000, on_error="closed", clock=clock)
    ws = (WindowSpec("a", 100, 60.0), WindowSpec("b", 300, 600.0), WindowSpec("c", 37, 7.5))
    rng = random.Random(7)
    open_res: list[tuple[object, object]] = []
    try:
        for _ in range(300):
            clock.advance(rng.choice([0.0, 0.1, 1.3, 5.0, 20.0]))
            op = rng.random()
            if op < 0.6 or not open_res:
                amount = rng.randint(0, 45)
                rm = await mem.reserve("k", ws, amount)
                rr = await red.reserve("k", ws, amount)
                assert (rm.ok, rm.never_fits) == (rr.ok, rr.never_fits)
                assert rm.retry_after_s == pytest.approx(rr.retry_after_s, abs=1e-6)
                for a, b in zip(rm.windows, rr.windows, strict=True):
                    assert a.remaining == pytest.approx(b.remaining, abs=1e-6)
                    assert a.reset_s == pytest.approx(b.reset_s, abs=1e-6)
                if rm.ok:
                    open_res.append((rm.reservation, rr.reservation))
            else:
                res_m, res_r = open_res.pop(rng.randrange(len(open_res)))
                actual = rng.randint(0, 60)
                assert await mem.commit(res_m, actual) == await red.commit(res_r, actual)
            pm = await mem.peek("k", ws)
            pr = await red.peek("k", ws)
            for a, b in zip(pm, pr, strict=True):
                assert a.remaining == pytest.approx(b.remaining, abs=1e-6)
    finally:
        await red.close()


def test_require_redis_skips_or_fails(monkeypatch):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.delenv("HYDRAGUARD_REQUIRE_REDIS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="unreachable"):
        require_redis(dead)
    monkeypatch.setenv("HYDRAGUARD_REQUIRE_REDIS", "1")
    with pytest.raises(pytest.fail.Exception, match="HYDRAGUARD_REQUIRE_REDIS=1"):
        require_redis(dead)
