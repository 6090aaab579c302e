"""The pieces that keep budgets when Redis is down: the circuit breaker (pure), the local
1/N share, and the bounded record of what Redis missed."""

from __future__ import annotations

import pytest

from hydraguard.budgets import WindowSpec
from hydraguard.budgets.breaker import Breaker
from hydraguard.budgets.fallback import Debts, LocalShare

from .redis_util import FakeClock

M = WindowSpec("minute", 100, 60.0)
D = WindowSpec("day", 10_001, 86_400.0)


def test_breaker_opens_after_consecutive_failures_only():
    b = Breaker(failures=3, successes=2, backoff_s=1.0)
    assert [b.failure(0.0), b.failure(0.1)] == [None, None]
    b.success()  # a slow-but-up Redis: failures interleaved with successes never open it
    assert [b.failure(0.2), b.failure(0.3)] == [None, None]
    assert b.closed
    assert b.failure(0.4) == "down"
    assert not b.closed and b.state == "open"
    assert b.failure(0.5) is None  # already open: reported once
    assert b.probe_delay(0.4) == pytest.approx(1.0)
    assert b.probe_delay(2.0) == 0.0


def test_breaker_half_open_needs_successes_in_a_row_and_backs_off():
    b = Breaker(failures=1, successes=3, backoff_s=1.0, max_backoff_s=4.0, probe_gap_s=0.1)
    assert b.failure(0.0) == "down"
    assert b.probe_ok(1.0) is None and b.state == "half-open"
    assert b.probe_delay(1.0) == pytest.approx(0.1)
    assert b.probe_ok(1.1) is None
    b.probe_failed(1.2)  # not yet: open again, the back-off doubles
    assert b.state == "open" and b.backoff == 2.0
    b.probe_failed(3.2)
    b.probe_failed(7.2)
    assert b.backoff == 4.0  # capped
    assert [b.probe_ok(11.2), b.probe_ok(11.3), b.probe_ok(11.4)] == [None, None, "recovered"]
    assert b.closed
    # it falls over again at once: no reset of the back-off (no flapping at 1 s)
    assert b.failure(12.0) == "down" and b.backoff == 4.0
    for t in (16.0, 16.1, 16.2):
        b.probe_ok(t)
    assert b.closed
    assert b.failure(100.0) == "down" and b.backoff == 1.0  # stable for a while: fresh


def test_local_share_is_one_nth_of_every_window():
    share = LocalShare(3, FakeClock())
    r = share.reserve("k", (M, D), 33, now=1000.0)
    assert r.ok and r.degraded and r.backend == "local"
    assert [(w.name, w.limit, w.remaining) for w in r.windows] == [("minute", 33, 0.0),
                                                                    ("day", 3333, 3300.0)]
    refused = share.reserve("k", (M, D), 1, now=1000.0)
    assert not refused.ok and refused.degraded and refused.backend == "local"
    assert refused.retry_after_s == pytest.approx(60 / 33)
    assert share.owns(r.reservation)
    assert share.origin(r.reservation.windows) == (M, D)
    assert share.settle(r.reservation, 10, now=1000.0)
    assert share.reserve("k", (M, D), 23, now=1000.0).ok


def test_local_share_starts_from_the_level_last_seen_on_redis():
    share = LocalShare(2, FakeClock())
    share.observe("k", (M, D), (80.0, 8000.0), now=1000.0)  # seen on Redis: 20 and 2001 left
    r = share.reserve("k", (M, D), 5, now=1006.0)  # 6 s later: minute refilled by 10
    # local minute: 50 tokens, level 80 / 2 = 40 refilled by 6 s x 50/60 = 35, + 5
    assert r.ok and r.windows[0].remaining == pytest.approx(50 - 35 - 5)
    assert r.windows[1].remaining == pytest.approx(5000 - (4000 - 6 * 5000 / 86_400) - 5)
    assert not share.reserve("k", (M, D), 11, now=1006.0).ok
    share.reset()  # Redis back: the next outage starts from what Redis says then
    share.observe("k", (M, D), (0.0, 0.0), now=2000.0)
    assert share.reserve("k", (M, D), 50, now=2000.0).ok


def test_local_share_limit_never_below_one_token():
    share = LocalShare(1000, FakeClock())
    assert share.reserve("k", (M,), 1, now=0.0).windows[0].limit == 1


def test_debts_aggregate_per_key_and_stay_bounded():
    d = Debts(max_items=3)
    d.charge("a", "g", (M,), 10)
    d.charge("a", "g", (M,), 5)
    d.charge("b", None, (M,), 0)  # nothing used: nothing owed
    assert d.charges == {("a", "g"): [(M,), 15]} and len(d) == 1
    for k in "bcd":
        d.charge(k, "g", (M,), 1)
    assert list(d.charges) == [("b", "g"), ("c", "g"), ("d", "g")] and d.dropped == 1
