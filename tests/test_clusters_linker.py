"""ClusterLinker: thresholds, stable ids, expiry, transitivity, memory bounds."""

from __future__ import annotations

import time

import pytest

from hydraguard.clusters import ClusterLinker, LinkRule

try:
    from redis_util import FakeClock
except ImportError:  # tests/ turned into a package
    from tests.redis_util import FakeClock

RULES = (
    LinkRule("ip", min_accounts=5, max_accounts=64),
    LinkRule("template", min_accounts=5, max_accounts=1000),
)


def linker(clock, **kw):
    kw.setdefault("window_s", 600.0)
    kw.setdefault("max_nodes", 10_000)
    kw.setdefault("link_rules", RULES)
    return ClusterLinker(clock=clock, **kw)


def ids(lk, accounts):
    return {lk.cluster_of(a) for a in accounts}


def test_unlinked_account_is_own_cluster_and_id_format():
    lk = linker(FakeClock())
    cid = lk.cluster_of("never-seen")
    assert cid.startswith("h-") and len(cid) == 18
    assert lk.cluster_of("never-seen") == cid
    assert lk.cluster_of("other") != cid
    assert lk.cluster_size("never-seen") == 1


@pytest.mark.parametrize("n", [2, 3, 4])
def test_small_shared_nat_does_not_link(n):
    clock = FakeClock()
    lk = linker(clock)
    accounts = [f"colleague{i}" for i in range(n)]
    for _ in range(10):  # repeated traffic does not matter, distinct accounts do
        for a in accounts:
            lk.observe(a, {"ip": "203.0.113.7"})
            clock.advance(1)
    assert len(ids(lk, accounts)) == n
    assert all(lk.cluster_size(a) == 1 for a in accounts)


def test_fifty_accounts_on_one_ip_merge():
    clock = FakeClock()
    lk = linker(clock)
    accounts = [f"acct{i}" for i in range(50)]
    for a in accounts:
        lk.observe(a, {"ip": "198.51.100.9"})
        clock.advance(1)
    assert len(ids(lk, accounts)) == 1
    assert lk.cluster_size("acct17") == 50
    assert lk.stats()["clusters"] == 1


def test_threshold_is_exact():
    clock = FakeClock()
    lk = linker(clock)
    for i in range(4):
        lk.observe(f"a{i}", {"ip": "1.1.1.1"})
    assert len(ids(lk, [f"a{i}" for i in range(4)])) == 4
    lk.observe("a4", {"ip": "1.1.1.1"})
    assert len(ids(lk, [f"a{i}" for i in range(5)])) == 1


def test_carrier_nat_above_max_accounts_does_not_link():
    clock = FakeClock()
    lk = linker(clock)
    accounts = [f"mobile{i}" for i in range(100)]  # > max_accounts=64
    for a in accounts:
        lk.observe(a, {"ip": "100.64.0.1"})
    # the first 64 were linked while below the cap; the next rebuild drops that link
    clock.advance(lk.rebuild_every_s)
    assert len(ids(lk, accounts)) == 100


def test_ids_stable_as_accounts_join():
    clock = FakeClock()
    lk = linker(clock)
    first = "founder"
    before = lk.cluster_of(first)  # id while still unlinked
    lk.observe(first, {"template": "tpl-42"})
    clock.advance(1)
    seen = set()
    for i in range(60):
        lk.observe(f"sock{i}", {"template": "tpl-42"})
        clock.advance(1)
        if i >= 3:  # 5 accounts: linked from here on
            seen.add(lk.cluster_of(f"sock{i}"))
            seen.add(lk.cluster_of(first))
    assert seen == {before}
    # still the same after a rebuild (oldest first-seen member stays the root)
    lk.rebuild()
    assert lk.cluster_of("sock59") == before


def test_merge_of_two_clusters_keeps_older_id():
    clock = FakeClock()
    lk = linker(clock)
    old = [f"old{i}" for i in range(5)]
    young = [f"young{i}" for i in range(5)]
    for a in old:
        lk.observe(a, {"ip": "10.0.0.1"})
        clock.advance(1)
    for a in young:
        lk.observe(a, {"ip": "10.0.0.2"})
        clock.advance(1)
    old_id, young_id = lk.cluster_of("old0"), lk.cluster_of("young0")
    assert old_id != young_id
    # a shared prompt template bridges them (transitive across evidence kinds)
    for a in ["old4", "young4", "x1", "x2", "x3"]:
        lk.observe(a, {"template": "tpl-bridge"})
    assert ids(lk, old + young + ["x1"]) == {old_id}


def test_links_expire_after_window():
    clock = FakeClock()
    lk = linker(clock, window_s=600.0)
    accounts = [f"acct{i}" for i in range(20)]
    for a in accounts:
        lk.observe(a, {"ip": "192.0.2.1"})
    assert len(ids(lk, accounts)) == 1
    clock.advance(599.0)
    assert len(ids(lk, accounts)) == 1
    # guaranteed gone by window + rebuild interval
    clock.advance(1.0 + lk.rebuild_every_s)
    assert len(ids(lk, accounts)) == 20
    assert lk.stats()["evidence"] == 0


def test_continued_evidence_keeps_link_alive():
    clock = FakeClock()
    lk = linker(clock, window_s=600.0)
    accounts = [f"acct{i}" for i in range(6)]
    for _ in range(10):  # 10 rounds over 2000 s, each well within the window
        for a in accounts:
            lk.observe(a, {"ip": "192.0.2.2"})
        clock.advance(200.0)
        assert len(ids(lk, accounts)) == 1


def test_unknown_kinds_and_empty_values_are_ignored():
    clock = FakeClock()
    lk = linker(clock)
    for i in range(10):
        lk.observe(f"a{i}", {"asn": "AS1", "ip": "", "template": None})
    assert len(ids(lk, [f"a{i}" for i in range(10)])) == 10
    assert lk.stats()["evidence"] == 0


def test_rule_validation():
    with pytest.raises(ValueError):
        LinkRule("ip", min_accounts=1)
    with pytest.raises(ValueError):
        LinkRule("ip", min_accounts=10, max_accounts=5)


def test_memory_bound_with_100k_accounts():
    clock = FakeClock()
    lk = linker(clock, max_nodes=10_000, window_s=3600.0)
    t0 = time.perf_counter()
    for i in range(100_000):
        # groups of 8 accounts per IP (linked), every account also a unique-ish template
        lk.observe(
            f"user{i}",
            {
                "ip": f"10.{i // 8 // 65536 % 256}.{i // 8 // 256 % 256}.{i // 8 % 256}",
                "template": f"t{i}",
            },
        )
        if i % 1000 == 0:
            clock.advance(1.0)
    elapsed = time.perf_counter() - t0
    stats = lk.stats()
    assert stats["nodes"] <= 10_000
    assert stats["evidence"] <= 20_000
    assert stats["parent"] <= 20_000
    assert stats["evidence_members"] <= 20_000 * 65
    # recent groups are still linked
    assert lk.cluster_of("user99999") == lk.cluster_of("user99992")
    assert elapsed < 10.0
    lk.rebuild()
    assert lk.stats()["parent"] <= 10_000


def test_automatic_rebuild_runs_in_slices_and_equals_a_rebuild_at_once():
    """The automatic rebuild moves evidence into a new union-find ~1 ms per call while the
    old one answers; new links made meanwhile survive the swap; the result is exactly that
    of `rebuild()` at once (expired links gone, same cluster ids)."""
    clock, ref_clock = FakeClock(), FakeClock()
    lk = linker(clock, max_nodes=100_000, rebuild_every_s=550.0)
    ref = linker(ref_clock, max_nodes=100_000, rebuild_every_s=10_000.0)

    def observe(i: int, t: float) -> None:
        for k, c in ((lk, clock), (ref, ref_clock)):
            c.t = t
            k.observe(f"a{i}", {"ip": f"10.{i // 2000}.{i // 8 % 250}.1",
                                "template": f"t{i // 40}"})

    t0 = clock.t
    for i in range(30_000):  # the first 10,000 are seen early: their links will expire
        observe(i, t0 if i < 10_000 else t0 + 500.0)
    assert lk.cluster_of("a0") == lk.cluster_of("a39")  # linked by template t0
    assert lk.stats()["rebuilding"] == 0
    clock.t = ref_clock.t = t0 + 601.0  # past the window for the early ones; rebuild due
    old_answer = lk.cluster_of("a0")  # starts the rebuild: the old union-find still answers
    assert lk.stats()["rebuilding"] == 1 and old_answer == lk.cluster_of("a39")
    # a link made while the rebuild runs
    for j in range(5):
        lk.observe(f"new{j}", {"ip": "192.0.2.200"})
        ref.observe(f"new{j}", {"ip": "192.0.2.200"})
    assert lk.cluster_of("new4") == lk.cluster_of("new0")
    calls = 2
    while lk.stats()["rebuilding"]:
        lk.cluster_of("a20000")
        calls += 1
    assert calls > 3 and lk.rebuilds == 1
    ref.rebuild()
    accounts = [f"a{i}" for i in range(0, 30_000, 7)] + [f"new{j}" for j in range(5)]
    assert [lk.cluster_of(a) for a in accounts] == [ref.cluster_of(a) for a in accounts]
    assert lk.cluster_of("a0") != lk.cluster_of("a39")  # expired with its evidence
    assert lk.cluster_of("new4") == lk.cluster_of("new0")  # made during the rebuild: kept
    assert lk.stats()["evidence"] == ref.stats()["evidence"]
