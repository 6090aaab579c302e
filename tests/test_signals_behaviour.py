"""Sliding-window counters and the behaviour tracker (injected clock, bounded memory)."""

from __future__ import annotations

import pytest

from hydraguard.signals.behaviour import (
    BehaviourConfig,
    BehaviourTracker,
    DistinctCounter,
    RateCounter,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_distinct_counter_window() -> None:
    c = Clock()
    d = DistinctCounter(window_s=60, max_keys=10, max_members_per_key=100, clock=c)
    assert d.add("ip", "a") == 1
    assert d.add("ip", "a") == 1
    assert d.add("ip", "b") == 2
    c.t += 30
    assert d.add("ip", "c") == 3
    c.t += 31  # a and b (seen at t=1000) are now out of the window
    assert d.count("ip") == 1
    assert d.add("ip", "a") == 2  # c and a
    assert d.count("unknown") == 0
    c.t += 1000
    assert d.count("ip") == 0


def test_distinct_counter_refresh_keeps_member() -> None:
    c = Clock()
    d = DistinctCounter(60, 10, 100, c)
    d.add("k", "a")
    c.t += 50
    d.add("k", "a")  # refreshed
    c.t += 50
    assert d.add("k", "b") == 2


def test_distinct_counter_bounds() -> None:
    c = Clock()
    d = DistinctCounter(window_s=60, max_keys=3, max_members_per_key=5, clock=c)
    for i in range(20):
        assert d.add("k", i) == min(i + 1, 5)  # saturates at the member cap
    for k in "abcdef":
        c.t += 0.1  # (touch times have a 1/16 s resolution)
        d.add(k, 1)
    assert len(d) == 3  # LRU keeps the last three keys
    assert d.count("a") == 0 and d.count("f") == 1
    c.t += 61
    d.add("z", 1)  # idle keys are dropped lazily
    assert len(d) == 1


def test_rate_counter_sliding_window() -> None:
    c = Clock()
    c.t = 600.0  # start of a window (window index 10)
    r = RateCounter(window_s=60, max_keys=10, clock=c)
    for _ in range(30):
        r.hit("acct")
    assert r.rate("acct") == 30
    c.t = 660.0 + 15  # next window, 25% in: previous weighted by 0.75
    assert r.hit("acct", 2) == pytest.approx(2 + 30 * 0.75)
    assert r.rate("acct") == pytest.approx(2 + 22.5)
    c.t = 720.0 + 59.9  # two windows later: only the previous window's 2 hits, weight ~0
    assert r.rate("acct") == pytest.approx(2 * (1 - 59.9 / 60))
    c.t = 1000.0
    assert r.rate("acct") == 0 and r.hit("acct") == 1
    assert r.rate("nobody") == 0


def test_rate_counter_bounds() -> None:
    c = Clock()
    r = RateCounter(60, 5, c)
    for i in range(100):
        r.hit(i)
        assert len(r) <= 5
    c.t += 200
    r.hit("new")
    assert len(r) == 1


def test_tracker_signals() -> None:
    c = Clock()
    t = BehaviourTracker(BehaviourConfig(window_s=3600, rate_window_s=60, max_keys=1000), c)
    for i in range(10):
        out = t.update(f"198.51.100.{i}", f"acct{i}", asn=64500, country="US")
    assert out["accounts_per_ip"] == 1
    assert out["accounts_per_v4_24"] == 10
    assert out["accounts_per_v6_64"] == 0
    out = t.update("198.51.100.3", "acct0", asn=64501, country="DE")
    assert out == {
        "accounts_per_ip": 2,
        "accounts_per_v4_24": 10,
        "accounts_per_v6_64": 0,
        "ips_per_account": 2,
        "asns_per_account": 2,
        "countries_per_account": 2,
        "requests_per_account": 2,
    }
    for i in range(5):
        out = t.update(f"2001:db8:1:2::{i}", f"v6acct{i}", None, None)
    assert out["accounts_per_v6_64"] == 5 and out["accounts_per_v4_24"] == 0
    assert out["asns_per_account"] == 0 and out["countries_per_account"] == 0
    out = t.update("2001:db8:1:3::1", "v6acct0")
    assert out["accounts_per_v6_64"] == 1 and out["ips_per_account"] == 2
    # IPv4-mapped IPv6 is the same IPv4 address
    out = t.update("::ffff:198.51.100.3", "acct99")
    assert out["accounts_per_ip"] == 3 and out["accounts_per_v4_24"] == 11
    # no account: read-only for the IP side
    out = t.update("198.51.100.3", None)
    assert out["accounts_per_ip"] == 3 and out["ips_per_account"] == 0
    assert out["requests_per_account"] == 0
    # invalid ip: IP side zero, account side still counted
    out = t.update("not-an-ip", "acct0", 64502, "FR")
    assert out["accounts_per_ip"] == 0 and out["ips_per_account"] == 2
    assert out["asns_per_account"] == 3 and out["countries_per_account"] == 3
    # the window expires everything
    c.t += 3601
    out = t.update("198.51.100.3", "acct0", 64500, "US")
    assert out["accounts_per_ip"] == 1 and out["ips_per_account"] == 1
    assert out["asns_per_account"] == 1 and out["accounts_per_v4_24"] == 1


def test_memory_bounds_with_a_million_distinct_ips_and_accounts() -> None:
    c = Clock()
    cfg = BehaviourConfig(window_s=3600, rate_window_s=60, max_keys=20_000, max_members_per_key=50)
    t = BehaviourTracker(cfg, c)
    counters = t.counters()
    for i in range(1_000_000):
        ip = f"{10 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        t.update(ip, f"a{i}", 64500 + (i & 1023), "US")
        if i % 50_000 == 0:
            c.t += 1
            for counter in counters.values():
                assert len(counter) <= cfg.max_keys
    for counter in counters.values():
        assert len(counter) <= cfg.max_keys
    # /24 networks: 1M addresses = 3907 distinct /24, each with 256 accounts capped at 50
    assert t.accounts_per_v4_24.count((10 << 16) | (15 << 8) | 64) == 50
