"""Compact counters: exact against a plain reference up to 32 members, estimates above within
the stated error, bounded memory per key, tables that grow, shrink and evict."""

from __future__ import annotations

import random
import statistics
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydraguard.signals.behaviour import DistinctCounter, RateCounter
from hydraguard.signals.sketch import EXACT, Members, h64
from hydraguard.signals.table import KeyTable


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Reference:
    """The plain sliding-window distinct counter (what the compact one must equal)."""

    def __init__(self, window: float, cap: int) -> None:
        self.window, self.cap = window, cap
        self.keys: dict[object, dict[object, float]] = {}

    def add(self, now: float, key: object, member: object) -> int:
        members = self.keys.setdefault(key, {})
        members[member] = now
        return self.count(now, key)

    def count(self, now: float, key: object) -> int:
        members = self.keys.get(key, {})
        return min(self.cap, sum(1 for t in members.values() if t >= now - self.window))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40), st.integers(0, 30),
                          st.booleans()), max_size=300))
def test_exact_up_to_32_members(ops: list[tuple[int, int, int, bool]]) -> None:
    """Random adds and reads of at most 41 members over a 60 s window, time moving in whole
    seconds: equal to the reference while a key never held more than EXACT at once."""
    clock = Clock()
    d = DistinctCounter(60, 100, 1000, clock)
    ref = Reference(60, 1000)
    for key, member, dt, read in ops:
        clock.t += dt
        if read:
            assert d.count(key) == ref.count(clock.t, key)
            continue
        got = d.add(key, member)
        want = ref.add(clock.t, key, member)
        if max(ref.count(clock.t, k) for k in ref.keys) <= EXACT:
            assert got == want


@pytest.mark.parametrize("cap", [1, 5, 32])
def test_saturates_at_the_member_cap(cap: int) -> None:
    clock = Clock()
    d = DistinctCounter(60, 10, cap, clock)
    for i in range(100):
        assert d.add("k", i) == min(i + 1, cap)
        clock.t += 0.25
    assert d.count("k") == cap


@pytest.mark.parametrize("n", [33, 100, 1000, 20_000])
def test_estimates_above_32_within_the_stated_error(n: int) -> None:
    errors = []
    for trial in range(20):
        m = Members()
        for i in range(n):
            got = m.add(h64(f"{trial}/{i}"), 100, 3600 * 16, 10**9)
        assert not m.exact
        errors.append(got / n - 1)
    rms = statistics.fmean(e * e for e in errors) ** 0.5
    assert rms < 0.13 and max(map(abs, errors)) < 0.35, errors  # 9 % standard error


def test_sketch_window_and_return_to_exact() -> None:
    m, w = Members(), 60 * 16
    for i in range(200):
        m.add(h64(i), 16_000, w, 10**9)
    assert 160 < m.count(16_000 + w - 16, w, 10**9) < 240  # still in the window
    # a quarter window later than the window at most, they are gone, and it is exact again
    assert m.count(16_000 + w + w // 4 + 16, w, 10**9) == 0 and m.exact
    assert m.add(h64("x"), 16_000 + 2 * w, w, 10**9) == 1


def test_merge_exact_and_sketch() -> None:
    w = 3600 * 16
    a, b, c = Members(), Members(), Members()
    for i in range(20):
        a.add(h64(i), 100, w, 10**9)
        b.add(h64(i + 10), 100, w, 10**9)
    a.merge(b, 100, w, 10**9)
    assert a.count(100, w, 10**9) == 30 and a.exact
    for i in range(500):
        c.add(h64(i + 1000), 100, w, 10**9)
    a.merge(c, 100, w, 10**9)
    assert not a.exact and 450 < a.count(100, w, 10**9) < 610


def test_members_memory_is_bounded() -> None:
    m = Members()
    sizes = []
    for i in range(5000):
        m.add(h64(i), 100, 3600 * 16, 10**9)
        if i in (0, 31, 4999):
            sk = m._sketch
            sizes.append(sys.getsizeof(m) + sys.getsizeof(m._hashes) + sys.getsizeof(m._seen)
                         + (0 if sk is None else sys.getsizeof(sk) + sys.getsizeof(sk._regs)
                            + sys.getsizeof(sk._merged) + sys.getsizeof(sk._epochs)))
    assert sizes[0] < 260 and sizes[1] < 500 and sizes[2] < 1400


def test_table_grows_rebuilds_and_keeps_every_live_key() -> None:
    clock = Clock()
    t = KeyTable(60, 100_000, 1, clock=clock)
    keys = [h64(i) for i in range(20_000)]
    for k in keys:
        i, created = t.slot(k, t.now())
        assert created
        t.add(i, 0, k, k, t.now(), 10)
    assert len(t) == 20_000 and 20_000 / t.cap <= 0.75 and t.cap <= 65_536
    assert all(t.find(k) >= 0 for k in keys)
    clock.t += 61  # all dead: the next rebuild drops them and shrinks the table
    fresh = [h64(("new", i)) for i in range(50)]
    for k in fresh:
        t.slot(k, t.now())
    t._rebuild(t.now())
    assert len(t) == 50 and t.cap <= 128
    assert all(t.find(k) >= 0 for k in fresh) and all(t.find(k) < 0 for k in keys[:100])


def test_table_evicts_the_least_recently_touched_when_full() -> None:
    clock = Clock()
    d = DistinctCounter(3600, 5_000, 10, clock)
    rnd = random.Random(4)
    for i in range(30_000):
        d.add(i, rnd.random())
        clock.t += 0.01
        if i % 1000 == 0:
            assert len(d) <= 5_000
    assert 5_000 - 5_000 // 64 <= len(d) <= 5_000  # the oldest 1/64 go at once
    assert sum(d.count(i) for i in range(30_000 - 4_900, 30_000)) == 4_900  # the newest stay


def test_rate_counter_keys_die_after_two_windows() -> None:
    clock = Clock()
    r = RateCounter(10, 100, clock)
    r.hit("a", 3)
    clock.t += 15
    assert r.rate("a") > 0 and len(r) == 1
    clock.t += 10
    assert r.rate("a") == 0 and len(r) == 0
