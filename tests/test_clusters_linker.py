"""ClusterLinker: combined evidence (weights, flagged networks, rarity, multi-exit overlap),
look-alikes that must stay apart, stable ids, epochs, why-records, memory bounds."""

from __future__ import annotations

import ipaddress

import pytest

from hydraguard.clusters import ClusterLinker, LinkRule, cluster_id, evidence_of
from hydraguard.facts import Facts
from hydraguard.policy.budget_model import LinkConfig

try:
    from redis_util import FakeClock
except ImportError:  # tests/ turned into a package
    from tests.redis_util import FakeClock

RULES = (LinkRule("ip"), LinkRule("prefix"), LinkRule("asn"), LinkRule("tls_ua"),
         LinkRule("template"))


def linker(clock, **kw) -> ClusterLinker:
    cfg = LinkConfig(**{"window_s": 600.0, "max_nodes": 10_000, "rules": RULES, **kw})
    return ClusterLinker(config=cfg, clock=clock)


def sizes(lk, accounts):
    return [lk.cluster_size(a) for a in accounts]


def hydra_request(lk, clock, acct, exit_ip, template, flagged=True):
    clock.advance(2.0)
    lk.observe(acct, {"ip": exit_ip, "prefix": exit_ip.rsplit(".", 1)[0] + ".0/24",
                      "asn": "64600", "template": template}, flagged=flagged)


def test_unlinked_account_is_own_cluster_and_id_format():
    lk = linker(FakeClock())
    cid = lk.cluster_of("never-seen")
    assert cid == cluster_id("never-seen") and cid.startswith("h-") and len(cid) == 18
    assert lk.cluster_size("never-seen") == 1
    assert lk.link_info("never-seen") is None


def test_hydra_on_flagged_exits_links_within_its_first_requests():
    """20 accounts, each sending 2 requests through 2 of 4 residential-proxy exits (flagged)
    with one of 2 slot-varied templates: from the third account on, every account is in the
    hydra's cluster after its first request; the cluster is named after the first account."""
    clock = FakeClock()
    lk = linker(clock)
    exits = [f"203.0.{j}.7" for j in range(4)]  # four /24s
    accounts = [f"h{i:02d}" for i in range(20)]
    root = cluster_id("h00")
    for i, a in enumerate(accounts):
        hydra_request(lk, clock, a, exits[i % 4], f"tpl-{i % 2}")
        if i >= 2:
            assert lk.cluster_of(a) == root, a
        hydra_request(lk, clock, a, exits[(i + 1) % 4], f"tpl-{(i + 1) % 2}")
    assert {lk.cluster_of(a) for a in accounts} == {root}
    assert lk.cluster_size("h19") == 20
    # h02's first request: its exit and /24 had 2 accounts (below min_accounts 3); the ASN
    # (0.3 flagged) and tpl-0 (0.7 flagged) it shares with h01 add up to the threshold
    info = lk.link_info("h02")
    assert info == {"members": 20, "score": 1.0, "kinds": {"asn": 1, "template": 1},
                    "flagged": True, "via": "h01", "age_s": 70.0}
    # h05: its exit (203.0.1.7: h00, h01, h04 before it) and tpl-1 with h04
    assert lk.why("h05")[:4] == ("h04", 1.4, (1, 0, 0, 0, 1), True)
    assert lk.stats()["clusters"] == 1


def test_one_shared_value_never_links():
    clock = FakeClock()
    lk = linker(clock)
    # 60 accounts behind one flagged exit, nothing else in common
    for i in range(60):
        clock.advance(1)
        lk.observe(f"vpn{i}", {"ip": "198.51.100.9", "template": f"own-{i}"}, flagged=True)
    # 60 accounts sending one template through flagged networks, each from its own exit
    for i in range(60):
        clock.advance(1)
        lk.observe(f"tpl{i}", {"ip": f"192.0.2.{i}", "template": "shared"}, flagged=True)
    assert sizes(lk, [f"vpn{i}" for i in range(60)] + [f"tpl{i}" for i in range(60)]) == \
        [1] * 120
    assert lk.stats()["clusters"] == 0 and lk.stats()["pairs"] > 0


def test_office_nat_stays_apart_even_with_a_shared_tool():
    """25 colleagues behind one unflagged NAT address, one TLS stack, all using one internal
    tool's template: 0.35 + 0.25 + 0.35 = 0.95 < 1."""
    clock = FakeClock()
    lk = linker(clock)
    staff = [f"office{i}" for i in range(25)]
    for _round in range(4):
        for a in staff:
            clock.advance(3)
            lk.observe(a, {"ip": "62.80.0.9", "prefix": "62.80.0.0/24", "asn": "64503",
                           "tls_ua": "t13d|Anthropic/Python", "template": "internal-tool"})
    assert sizes(lk, staff) == [1] * 25


def test_saas_backend_with_two_keys_on_cloud_addresses_stays_apart():
    """Two busy keys, three stable hosting addresses (flagged), one product prompt: every
    value has 2 accounts, below min_accounts."""
    clock = FakeClock()
    lk = linker(clock)
    for n in range(80):
        for key in ("saas-a", "saas-b"):
            clock.advance(1)
            ip = f"91.100.0.{n % 3 + 1}"
            lk.observe(key, {"ip": ip, "prefix": "91.100.0.0/24", "asn": "65539",
                             "template": "product-prompt"}, flagged=True)
    assert sizes(lk, ["saas-a", "saas-b"]) == [1, 1]


def test_neighbours_of_a_proxy_exit_stay_apart():
    clock = FakeClock()
    lk = linker(clock)
    for i in range(12):  # the hydra, linked on its exit and templates
        hydra_request(lk, clock, f"h{i}", "46.10.3.77", f"tpl-{i % 2}")
        hydra_request(lk, clock, f"h{i}", "46.10.9.77", f"tpl-{(i + 1) % 2}")
    hydra_id = lk.cluster_of("h0")
    assert lk.cluster_size("h0") == 12
    for i in range(6):  # households in the exit's /24 and ISP, unflagged, own prompts
        for _ in range(3):
            clock.advance(5)
            lk.observe(f"nb{i}", {"ip": f"46.10.3.{100 + i}", "prefix": "46.10.3.0/24",
                                  "asn": "64600", "template": f"nb-{i}-{_}"})
    assert sizes(lk, [f"nb{i}" for i in range(6)]) == [1] * 6
    assert lk.cluster_of("h11") == hydra_id and lk.cluster_size("h0") == 12


def test_same_tool_users_stay_apart():
    clock = FakeClock()
    lk = linker(clock)
    users = [f"tool{i}" for i in range(30)]
    for _ in range(3):
        for i, a in enumerate(users):
            clock.advance(2)
            lk.observe(a, {"ip": f"81.30.{i}.5", "prefix": f"81.30.{i}.0/24", "asn": "64498",
                           "tls_ua": "t13d|Anthropic/JS", "template": "popular-tool"})
    assert sizes(lk, users) == [1] * 30


def test_multi_exit_overlap_within_minutes():
    """Two flagged exits shared within multi_exit seconds add up (0.7 + 0.7); shared an hour
    apart they count once."""
    clock = FakeClock()
    lk = linker(clock, window_s=7200.0, multi_exit_s=300.0)
    trio = ["m0", "m1", "m2"]
    for a in trio:
        clock.advance(5)
        lk.observe(a, {"ip": "198.51.100.1"}, flagged=True)
    for a in trio:
        clock.advance(5)
        lk.observe(a, {"ip": "198.51.100.2"}, flagged=True)
    assert lk.cluster_of("m2") == lk.cluster_of("m0") == cluster_id("m0")
    assert lk.link_info("m2")["kinds"] == {"ip": 2}
    slow = ["s0", "s1", "s2"]
    for a in slow:
        clock.advance(5)
        lk.observe(a, {"ip": "198.51.100.3"}, flagged=True)
    clock.advance(3600)
    for a in slow:
        clock.advance(5)
        lk.observe(a, {"ip": "198.51.100.4"}, flagged=True)
    assert sizes(lk, slow) == [1, 1, 1]


def test_common_values_weigh_less():
    """Rarity: with max_accounts 100 an exit shared by 60 accounts is worth
    0.7 * log10(100/60) = 0.155, so exit + template (0.7) does not reach 1; with 5 it does."""
    rules = (LinkRule("ip", max_accounts=100), LinkRule("template"))
    clock = FakeClock()
    lk = linker(clock, rules=rules)
    for i in range(59):  # a busy exit
        clock.advance(1)
        lk.observe(f"busy{i}", {"ip": "198.51.100.50"}, flagged=True)
    for a in ("late0", "late1"):
        clock.advance(1)
        lk.observe(a, {"ip": "198.51.100.50", "template": "t-late"}, flagged=True)
    assert sizes(lk, ["late0", "late1"]) == [1, 1]
    for i in range(5):
        clock.advance(1)
        lk.observe(f"rare{i}", {"ip": "198.51.100.60", "template": "t-rare"}, flagged=True)
    assert lk.cluster_size("rare4") == 5  # rare2 (third on the exit) linked rare0 and rare1
    for i in range(130):  # above max_accounts: the exit says nothing at all
        clock.advance(1)
        lk.observe(f"cgn{i}", {"ip": "198.51.100.70", "template": "t-cgn"}, flagged=True)
    assert lk.cluster_size("cgn129") == 1


def test_unflagged_networks_need_more_evidence():
    """The same sharing that links through flagged networks (exit + template) does not link
    through ordinary ones (0.35 + 0.35)."""
    clock = FakeClock()
    lk = linker(clock)
    for i in range(10):
        clock.advance(2)
        lk.observe(f"u{i}", {"ip": "81.30.7.7", "template": "t"}, flagged=False)
    assert sizes(lk, [f"u{i}" for i in range(10)]) == [1] * 10
    # one account flagged, the other not: the unflagged weight applies
    clock.advance(2)
    lk.observe("f0", {"ip": "81.30.7.7", "template": "t"}, flagged=True)
    assert lk.cluster_size("f0") == 1


def test_worked_example_of_the_rules_readme():
    """The table in rules/README.md (Hydra linking), pair by pair, with the default weights
    (the third account is there so every value has min_accounts 3)."""
    def pair(events, **kw):
        clock = FakeClock()
        lk = linker(clock, window_s=7200.0, **kw)
        for dt, acct, ev, fl in events:
            clock.advance(dt)
            lk.observe(acct, ev, flagged=fl)
        return round(lk.pair_score("A", "B"), 3), lk.cluster_of("B") == lk.cluster_of("A")

    def trio(ev, fl=True, dt=5):
        return [(dt, a, ev, fl) for a in ("C", "A", "B")]

    x, y = {"ip": "203.0.113.7"}, {"ip": "198.51.100.9"}
    t = {"template": "T"}
    assert pair(trio(x)) == (0.7, False)
    assert pair(trio({**x, **t})) == (1.4, True)
    assert pair(trio(x) + trio(y)) == (1.4, True)
    assert pair([*trio(x), (3600, "C", y, True), (5, "A", y, True), (5, "B", y, True)]) == \
        (0.7, False)
    n24 = {"ip": None, "prefix": "203.0.113.0/24", "template": "T"}
    assert pair([(5, a, {**n24, "ip": f"203.0.113.{i}"}, True)
                 for i, a in enumerate(("C", "A", "B"))]) == (1.0, True)
    home = [(5, "C", {"ip": "203.0.113.7", "prefix": "203.0.113.0/24", "asn": "64500"}, True),
            (5, "A", {"ip": "203.0.113.7", "prefix": "203.0.113.0/24", "asn": "64500"}, True),
            (5, "B", {"ip": "203.0.113.99", "prefix": "203.0.113.0/24", "asn": "64500"}, False)]
    assert pair(home) == (0.15, False)
    office = {"ip": "62.80.0.9", "tls_ua": "t13d|UA", "template": "tool"}
    assert pair(trio(office, fl=False)) == (0.95, False)
    busy = [(1, f"n{i}", x, True) for i in range(597)] + trio({**x, **t})
    assert pair(busy) == (0.855, False)


def _facts(ip: str) -> Facts:
    return Facts(request_id="r", method="POST", path="/v1/messages", peer_ip=None,
                 client_ip=ipaddress.ip_address(ip), account="a")


def test_ipv6_rotation_inside_a_64_is_one_exit():
    a = evidence_of(_facts("2001:db8:104:abcd::1"))
    b = evidence_of(_facts("2001:db8:104:abcd:ffff:1:2:3"))
    assert a["ip"] == b["ip"] == "2001:db8:104:abcd::/64"
    assert a["prefix"] == "2001:db8:104::/48"
    wide = LinkConfig(rules=RULES, ipv6_exit_prefix=48)
    assert evidence_of(_facts("2001:db8:104:1::1"), wide)["ip"] == \
        evidence_of(_facts("2001:db8:104:2::9"), wide)["ip"] == "2001:db8:104::/48"
    assert evidence_of(_facts("2001:db8:104:1::1"), wide)["prefix"] == "2001:db8::/32"
    v4 = evidence_of(_facts("198.51.100.7"))
    assert (v4["ip"], v4["prefix"]) == ("198.51.100.7", "198.51.100.0/24")
    # six accounts, every request from a new address of one /64 (flagged) + one template
    clock = FakeClock()
    lk = linker(clock)
    for i in range(6):
        for j in range(2):
            clock.advance(1)
            ev = evidence_of(_facts(f"2001:db8:104:abcd::{i * 16 + j + 1:x}"))
            lk.observe(f"v6-{i}", {**ev, "template": "tpl"}, flagged=True)
    assert [lk.cluster_of(f"v6-{i}") for i in range(6)] == [cluster_id("v6-0")] * 6


def test_ids_stable_as_accounts_join_and_merge_keeps_the_older_id():
    clock = FakeClock()
    lk = linker(clock)
    for i in range(6):
        hydra_request(lk, clock, f"old{i}", "203.0.113.1", "tpl-old")
    for i in range(6):
        hydra_request(lk, clock, f"young{i}", "203.0.113.2", "tpl-young")
    old_id, young_id = lk.cluster_of("old0"), lk.cluster_of("young0")
    assert (old_id, young_id) == (cluster_id("old0"), cluster_id("young0"))
    # a bridge account: the exit of the old cluster with the template of the young one (it
    # shares only the exit with the old accounts: 0.7), then the old template too
    hydra_request(lk, clock, "bridge", "203.0.113.1", "tpl-young")
    assert lk.cluster_of("bridge") == young_id and lk.cluster_size("old0") == 6
    hydra_request(lk, clock, "bridge", "203.0.113.1", "tpl-old")
    assert {lk.cluster_of(a) for a in ("bridge", "old5", "young5")} == {old_id}
    assert lk.cluster_size("young0") == 13


def test_links_last_one_to_two_windows_and_renew_while_active():
    clock = FakeClock(6000.0)  # the start of an epoch (window 600)
    lk = linker(clock)
    for i in range(5):
        hydra_request(lk, clock, f"a{i}", "203.0.113.9", "tpl")
    assert lk.cluster_size("a0") == 5
    clock.t = 6599.0  # same epoch
    assert lk.cluster_size("a0") == 5
    clock.t = 7199.0  # next epoch: links made in the previous one still hold
    assert lk.cluster_size("a0") == 5
    clock.t = 7201.0  # two epochs later, no new evidence: gone
    assert lk.cluster_size("a0") == 1 and lk.link_info("a4") is None
    # an active cluster is scored again in each epoch and stays linked
    for e in range(3):
        clock.t = 8400.0 + 600 * e
        for i in range(5):
            hydra_request(lk, clock, f"b{i}", "203.0.113.10", "tpl-b")
        assert lk.cluster_of("b4") == cluster_id("b0") and lk.cluster_size("b0") == 5


def test_why_records_kept_for_linked_accounts_only_and_bounded():
    clock = FakeClock()
    lk = linker(clock, max_why=50)
    for i in range(200):
        hydra_request(lk, clock, f"h{i}", f"203.0.{i % 5}.1", "tpl")
    for i in range(100):  # unlinked accounts get no why-record
        clock.advance(1)
        lk.observe(f"solo{i}", {"ip": f"192.0.2.{i}"})
    st = lk.stats()
    assert lk.cluster_size("h0") == 200
    assert st["why"] <= 2 * 50 and lk.why("solo3") is None
    assert lk.why("h199") is not None and lk.why("h0") is None  # evicted (oldest first)


def test_unknown_kinds_and_empty_values_are_ignored():
    clock = FakeClock()
    lk = linker(clock, rules=(LinkRule("ip"),))
    for i in range(10):
        lk.observe(f"a{i}", {"asn": "AS1", "ip": "", "template": None}, flagged=True)
    assert sizes(lk, [f"a{i}" for i in range(10)]) == [1] * 10
    assert lk.stats()["evidence"] == 0


def test_rule_validation_and_kind_defaults():
    with pytest.raises(ValueError):
        LinkRule("ip", min_accounts=1)
    with pytest.raises(ValueError):
        LinkRule("ip", min_accounts=10, max_accounts=5)
    with pytest.raises(ValueError):
        LinkRule("ip", weight=0.5, flagged_weight=0.2)
    assert LinkRule("ip") == LinkRule("ip", 3, 1000, 0.35, 0.7)
    assert LinkRule("asn") == LinkRule("asn", 3, 5000, 0.05, 0.3)


def test_memory_bounds_with_100k_accounts():
    clock = FakeClock()
    lk = linker(clock, max_nodes=10_000, window_s=3600.0, max_pairs=20_000, max_why=5_000)
    for i in range(100_000):
        # groups of 8 accounts per flagged exit, each group with its own template
        g = i // 8
        lk.observe(f"user{i}", {"ip": f"10.{g // 65536 % 256}.{g // 256 % 256}.{g % 256}",
                                "template": f"t{g}"}, flagged=True)
        if i % 1000 == 0:
            clock.advance(1.0)
    st = lk.stats()
    assert st["nodes"] <= 10_000 and st["evidence"] <= 20_000
    assert st["pairs"] <= 2 * 20_000 and st["partners"] <= 2 * 10_000
    assert st["why"] <= 2 * 5_000 and st["parent"] <= 2 * 20_000
    assert st["evidence_members"] == sum(  # a value seen with one account holds it inline
        1 if type(m) is tuple else len(m) for m in lk._values.values()) <= 20_000 * 1001
    assert st["clusters"] == sum(1 for n in lk._uf.size.values() if n > 1)
    assert lk.cluster_of("user99999") == lk.cluster_of("user99994")  # the last group
    assert lk.cluster_size("user99999") == 8  # the third member linked the first two
