"""Redis backend: key layout and TTLs, two replicas under concurrency, failure modes."""

from __future__ import annotations

import asyncio
import logging
import random
import signal

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
        assert keys == [f"{base}b", f"{base}h"]
        rid = r.reservation.id
        c = redis.Redis.from_url(url, decode_responses=True)
        try:
            assert set(c.hkeys(f"{base}b")) == {"minute:u", "minute:t", "day:u", "day:t",
                                                f"r:{rid}"}
            assert c.hget(f"{base}b", f"r:{rid}") == "10"
            assert c.zrange(f"{base}h", 0, -1, withscores=True) == [(rid, 1000.0 + 600)]
            assert 86_400_000 <= c.pttl(f"{base}b") <= 86_401_000  # longest period + 1 s
            assert 600_000 <= c.pttl(f"{base}h") <= 601_000  # hold TTL + 1 s
            assert await st.commit(r.reservation, 5)
            assert c.hget(f"{base}b", f"r:{rid}") is None and c.zcard(f"{base}h") == 0
            # minute window only: TTL >= period, and follows an overcharge while it drains
            r = await st.reserve("solo", (M,), 10)
            assert 600_000 <= c.pttl(f"{prefix}:v{V}:{{solo}}:b") <= 601_000  # the open hold
            assert await st.commit(r.reservation, 150)  # level 150 in a 100/60 s bucket
            assert 600_000 <= c.pttl(f"{prefix}:v{V}:{{solo}}:b") <= 601_000  # never shortened
            r = await st.reserve("solo2", (M,), 50)
            assert await st.commit(r.reservation, 2000)  # 2000 in 100/60 s: 1200 s to drain
            assert 1_200_000 < c.pttl(f"{prefix}:v{V}:{{solo2}}:b") <= 1_201_000
            # a later, smaller need never shortens the TTL
            r = await st.reserve("account=a1|model=x", (M,), 1)
            assert c.pttl(f"{base}b") > 86_000_000
            assert all(c.pttl(k) > 0 for k in keys_with_prefix(url, prefix))
        finally:
            c.close()
    finally:
        await st.close()


async def test_budgets_of_one_group_share_a_slot_and_one_script(redis_prefix):
    """The budgets of one request (one cluster = one group) are reserved in one script call,
    under one hash tag; each budget is answered on its own; one settle call for all."""
    url, prefix = redis_prefix
    st = RedisBudgetState(url, prefix=prefix, clock=FakeClock())
    calls = []
    run = st._runner.run

    async def counting(script, keys, args):
        calls.append(keys)
        return await run(script, keys, args)

    st._runner.run = counting
    small = WindowSpec("minute", 5, 60.0)
    try:
        asks = [("a:acct:x", (M,), 10), ("b:acct:x", (small,), 10), ("c:acct:x", (M, D), 7)]
        res = await st.reserve_many(asks, group="acct:x")
        assert [(r.ok, r.never_fits) for r in res] == [(True, False), (False, True),
                                                       (True, False)]
        assert len(calls) == 1 and len(calls[0]) == 6
        assert {k.split("}")[0] for k in calls[0]} == {f"{prefix}:v{V}:{{acct:x"}
        assert res[0].reservation.id == res[2].reservation.id  # one id per request
        assert res[0].reservation.group == "acct:x"
        assert await st.settle_many([(res[0].reservation, 4), (res[2].reservation, 0)]) \
            == [True, True]
        assert len(calls) == 2
        left = await st.peek("a:acct:x", (M,), group="acct:x")
        assert left[0].remaining == pytest.approx(96)
        assert (await st.peek("c:acct:x", (M, D), group="acct:x"))[1].remaining == 10_000
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
    """A dead Redis: three failures open the breaker (one DOWN line); from then on Redis is
    not tried on the request path. open: this replica's share answers (1/2 of 100 = 50 per
    minute, a real budget); closed: refusals with retry-after."""
    caplog.set_level(logging.INFO, logger="hydraguard.state")
    url = f"redis://:pw-{mode}-s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    st = RedisBudgetState(url, prefix=unique_prefix(), timeout_ms=50, on_error=mode,
                          clock=FakeClock(), replicas=2, down_backoff_s=60)
    tries = 0
    run = st._runner.run

    async def counting(*a):
        nonlocal tries
        tries += 1
        return await run(*a)

    st._runner.run = counting
    try:
        results = [await st.reserve("k", (M,), 10) for _ in range(100)]
        assert tries == 3  # then the breaker is open: no more connection attempts
        assert all(r.degraded for r in results)
        if mode == "open":
            assert [r.ok for r in results] == [True] * 5 + [False] * 95
            assert {r.backend for r in results} == {"local"}
            assert results[0].windows[0].limit == 50 and results[0].reservation is not None
            assert results[-1].retry_after_s == pytest.approx(60 / 50 * 10)
        else:
            assert not any(r.ok for r in results)
            assert {(r.backend, r.retry_after_s, r.reservation) for r in results} == {
                ("none", 1.0, None)}
        assert not st.healthy
        recs = state_records(caplog)
        assert len(recs) == 1, [r.getMessage() for r in recs]
        assert recs[0].levelname == "WARNING" and "DOWN" in recs[0].getMessage()
        assert f":***@127.0.0.1:{url.rsplit(':', 1)[1]}" in recs[0].getMessage()
        assert "s3cret" not in caplog.text  # the URL's password never reaches a log line
        assert await st.peek("k", (M,)) == ()
    finally:
        await st.close()


async def test_operation_bounded_by_timeout_ms(caplog):
    """A server that accepts but never answers: each op gives up after ~timeout_ms and is
    answered by the fallback; the third failure in a row opens the breaker."""
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
        down_backoff_s=60,
        clock=FakeClock(),
    )
    try:
        for _ in range(3):
            assert st.healthy
            r = await st.reserve("k", (M,), 1)
            assert not r.ok and r.degraded
        assert not st.healthy
        assert len(state_records(caplog)) == 1
    finally:
        await st.close()
        server.close()
        await server.wait_closed()


async def wait_healthy(st: RedisBudgetState) -> None:
    for _ in range(400):
        if st.healthy:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the breaker did not close")


async def test_recovers_when_redis_comes_back_and_sends_what_it_missed(caplog):
    """Redis frozen (SIGSTOP: calls time out, its data stays): the local share answers, and
    both its usage and a settle that failed are sent to Redis once probes close the breaker.
    DOWN and RECOVERED are logged once each."""
    caplog.set_level(logging.INFO, logger="hydraguard.state")
    w = WindowSpec("day", 1000, 86_400.0)
    with redis_server() as srv:
        clock = FakeClock()
        st = RedisBudgetState(srv.url, prefix="hg", timeout_ms=200, on_error="open",
                              down_backoff_s=0.1, clock=clock, replicas=2)
        try:
            r = await st.reserve("k", (w,), 100, group="g")
            assert r.ok and not r.degraded and r.windows[0].remaining == 900
            srv.proc.send_signal(signal.SIGSTOP)
            try:
                assert not await st.commit(r.reservation, 40)  # failed: queued, hold kept
                down = [await st.reserve("k", (w,), 100, group="g") for _ in range(6)]
                assert all(x.degraded and x.backend == "local" for x in down)
                # the share starts from what was left: 100 / 2 used of 500 -> 4 x 100
                assert [x.ok for x in down] == [True] * 4 + [False] * 2
                assert down[0].windows[0].remaining == pytest.approx(350)
                for x in down[:4]:
                    assert await st.commit(x.reservation, 30)  # local: applied at once
                assert not st.healthy
            finally:
                srv.proc.send_signal(signal.SIGCONT)
            await wait_healthy(st)
            for _ in range(100):
                if not len(st.debts):
                    break
                await asyncio.sleep(0.05)
            assert len(st.debts) == 0
            # the hold of 100 settled at 40, and the 4 x 30 used from the local share
            left = await st.peek("k", (w,), group="g")
            assert left[0].remaining == pytest.approx(1000 - 40 - 120)
            r = await st.reserve("k", (w,), 10, group="g")
            assert r.ok and not r.degraded and st.healthy
            msgs = [(x.levelname, x.getMessage()) for x in state_records(caplog)]
            assert len(msgs) == 2, msgs
            assert msgs[0][0] == msgs[1][0] == "WARNING"
            assert "DOWN" in msgs[0][1] and "RECOVERED" in msgs[1][1]
        finally:
            await st.close()


async def test_redis_restarted_empty_keeps_what_was_spent_before_the_outage():
    """Redis restarts without its data: a bucket starts again from the level this replica
    last saw (with the usage served from the local share on top), not from a fresh budget,
    whether or not it was used during the outage."""
    w = WindowSpec("day", 1000, 86_400.0)
    with redis_server() as srv:
        st = RedisBudgetState(srv.url, prefix="hg", timeout_ms=500, on_error="open",
                              down_backoff_s=0.1, clock=FakeClock(), replicas=2)
        try:
            r = await st.reserve("k", (w,), 300, group="g")
            assert await st.commit(r.reservation, 300)
            assert (await st.reserve("k", (w,), 0, group="g")).windows[0].remaining == 700
            r = await st.reserve("idle", (w,), 600, group="g")
            assert await st.commit(r.reservation, 600)
            srv.stop()
            down = await st.reserve("k", (w,), 100, group="g")
            assert down.backend == "local" and down.windows[0].remaining == 500 - 150 - 100
            assert await st.commit(down.reservation, 80)
            srv.start()  # empty
            await wait_healthy(st)
            for _ in range(100):
                if not len(st.debts):
                    break
                await asyncio.sleep(0.05)
            left = await st.peek("k", (w,), group="g")
            assert left[0].remaining == pytest.approx(1000 - 300 - 80)
            # not used during the outage: its first reserve starts from the level seen
            r = await st.reserve("idle", (w,), 500, group="g")
            assert not r.ok and r.windows[0].remaining == pytest.approx(400)
            assert (await st.reserve("idle", (w,), 400, group="g")).ok
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
    red = RedisBudgetState(url, prefix=prefix, timeout_ms=2000, on_error="closed", clock=clock,
                           reservation_ttl_s=10**7)  # memory holds do not expire
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
