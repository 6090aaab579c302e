"""The compact per-key records: budget state (one array('d') per key, window layouts), the
linker's evidence members (one account inline, then an LRU map of times) and pair scores
(one list per pair): exact values, eviction order, bounds."""

from __future__ import annotations

from array import array
from collections import OrderedDict

from hydraguard.budgets import MemoryBudgetState, WindowSpec
from hydraguard.clusters import ClusterLinker, LinkRule
from hydraguard.clusters.scoring import Pair
from hydraguard.policy.budget_model import LinkConfig

try:
    from redis_util import FakeClock
except ImportError:  # tests/ turned into a package
    from tests.redis_util import FakeClock

M = WindowSpec("minute", 100, 60.0)
H = WindowSpec("hour", 1000, 3600.0)
D = WindowSpec("day", 5000, 86400.0)


# -- budget state ------------------------------------------------------------------------
async def test_budget_record_is_one_array_with_exact_levels():
    clock = FakeClock(1000.0)
    s = MemoryBudgetState(max_keys=10, clock=clock)
    assert (await s.reserve("k", (M, H), 30)).ok
    rec = s._keys[hash("k")]
    assert type(rec) is array and rec.typecode == "d"
    # expiry (the longest period after the write), layout id, then level + timestamp per window
    assert list(rec) == [1000.0 + 3600.0, 0.0, 30.0, 1000.0, 30.0, 1000.0]
    assert s._layouts.names == [("minute", "hour")]
    clock.advance(6.0)  # minute refills 100/60 per second: 10 tokens; hour 1/3.6 per second
    st = await s.peek("k", (M, H))
    assert [w.remaining for w in st] == [80.0, 1000.0 - (30.0 - 6.0 / 3.6)]


async def test_budget_record_widens_for_new_windows_and_keeps_the_old_ones():
    clock = FakeClock(0.0)
    s = MemoryBudgetState(max_keys=10, clock=clock)
    assert (await s.reserve("k", (M,), 40)).ok
    assert (await s.reserve("k", (H, D), 7)).ok  # other windows on the same key
    rec = s._keys[hash("k")]
    assert s._layouts.names[int(rec[1])] == ("minute", "hour", "day")
    assert list(rec) == [86400.0, 1.0, 40.0, 0.0, 7.0, 0.0, 7.0, 0.0]
    assert [w.remaining for w in await s.peek("k", (M, H, D))] == [60.0, 993.0, 4993.0]
    # the same name lists share one layout id
    assert (await s.reserve("k2", (M,), 1)).ok and s._keys[hash("k2")][1] == 0.0
    assert len(s._layouts.names) == 2


async def test_budget_eviction_is_least_recently_used_and_reads_count_as_use():
    clock = FakeClock(0.0)
    s = MemoryBudgetState(max_keys=3, clock=clock)
    for k in ("a", "b", "c"):
        assert (await s.reserve(k, (M,), 10)).ok
    await s.peek("a", (M,))  # a read makes "a" the most recently used
    assert (await s.reserve("d", (M,), 10)).ok  # evicts "b"
    assert list(s._keys) == [hash("c"), hash("a"), hash("d")]
    assert [(await s.peek(k, (M,)))[0].remaining for k in "abcd"] == [90.0, 100.0, 90.0, 90.0]
    assert len(s) == 3


async def test_budget_dead_key_is_dropped_when_touched():
    clock = FakeClock(0.0)
    s = MemoryBudgetState(max_keys=3, clock=clock)
    assert (await s.reserve("a", (M,), 10)).ok
    clock.advance(60.0)  # the whole period: refilled, dead
    assert (await s.peek("a", (M,)))[0].remaining == 100.0
    assert hash("a") not in s._keys


# -- linker evidence members -------------------------------------------------------------
def _linker(clock, **kw) -> ClusterLinker:
    rules = (LinkRule("ip"), LinkRule("prefix"), LinkRule("template"))
    return ClusterLinker(config=LinkConfig(**{"window_s": 600.0, "max_nodes": 100,
                                             "rules": rules, **kw}), clock=clock)


def test_value_seen_with_one_account_is_held_inline_then_promoted():
    clock = FakeClock(100.0)
    lk = _linker(clock)
    lk.observe("a", {"ip": "192.0.2.1"})
    assert lk._values["ip:192.0.2.1"] == ("a", 100.0)
    clock.advance(5.0)
    lk.observe("a", {"ip": "192.0.2.1"}, flagged=True)  # the same account: still inline
    assert lk._values["ip:192.0.2.1"] == ("a", (105.0, True))
    clock.advance(5.0)
    lk.observe("b", {"ip": "192.0.2.1"})
    got = lk._values["ip:192.0.2.1"]
    assert type(got) is OrderedDict and list(got.items()) == [("a", (105.0, True)), ("b", 110.0)]
    assert lk.stats()["evidence"] == 1 and lk.stats()["evidence_members"] == 2
    assert lk.values() == [("ip", "192.0.2.1", {"a": (105.0, True), "b": (110.0, False)})]
    assert lk.value_keys() == [("ip", "192.0.2.1")]


def test_inline_member_older_than_the_window_is_replaced():
    clock = FakeClock(0.0)
    lk = _linker(clock)
    lk.observe("a", {"template": "t:1"})  # a ':' inside the value stays in the value
    clock.advance(601.0)
    lk.observe("b", {"template": "t:1"})
    assert lk._values["template:t:1"] == ("b", 601.0)
    assert lk.stats()["evidence_members"] == 1
    assert lk.value_keys() == [("template", "t:1")]
    assert lk.values() == [("template", "t:1", {"b": (601.0, False)})]


def test_evidence_values_bound_evicts_least_recently_seen_and_counts_members():
    clock = FakeClock(0.0)
    lk = _linker(clock, max_nodes=10)
    lk.observe("a", {"ip": "192.0.2.9"})
    lk.observe("b", {"ip": "192.0.2.9"})  # a map of two
    for i in range(20):  # ip values seen with one account each (max_evidence: 20)
        lk.observe(f"u{i}", {"ip": f"198.51.100.{i}"})
    assert lk.stats()["evidence"] == 20 and lk.stats()["evidence_members"] == 20
    assert ("ip", "192.0.2.9") not in lk.value_keys()  # the oldest went first
    lk.observe("u0", {"ip": "198.51.100.0"})  # seen again: now the most recent
    lk.observe("x", {"ip": "203.0.113.1"})
    keys = lk.value_keys()
    assert ("ip", "198.51.100.1") not in keys and keys[-2:] == [("ip", "198.51.100.0"),
                                                                ("ip", "203.0.113.1")]


# -- pair scores -------------------------------------------------------------------------
def test_pair_is_one_list_with_inline_counts():
    p = Pair()
    assert list(p) == [None, None, None, False] and p.flagged is False
    assert p.credit("ip", "ip:1", 0.35, True, 10.0, 600.0, 60.0) == 0.35
    assert p.credit("template", "template:t", 0.5, False, 11.0, 600.0, 60.0) == 0.35 + 0.5
    # a second exit within the burst window adds at most the weaker of the two
    assert p.credit("prefix", "prefix:1/24", 0.15, True, 12.0, 600.0, 60.0) == \
        0.35 + 0.15 + 0.5
    assert p[0] == [0.35, 0.15, 12.0, "prefix:1/24", "ip:1", 1, 1, 0, 0, 0]
    assert p[2] == [0.5, 0.0, 11.0, "template:t", None, 0, 0, 0, 0, 1]
    assert p.counts(12.0, 600.0) == (1, 1, 0, 0, 1)
    assert p.score(611.5, 600.0) == 0.35 + 0.15  # the template part is out of the window
    p.flagged = True
    assert p[3] is True
