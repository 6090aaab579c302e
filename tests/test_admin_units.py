"""The admin listener's parts without a proxy: overrides (memory, and shared through a real
Redis), the read-only link views, the metrics observer read back with prometheus_client's
text parser, the deny override in the decision core and replay, `--admin` address checks."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hydraguard.admin.listener import check_admin
from hydraguard.clusters import LinkRule
from hydraguard.clusters.keys import cluster_id
from hydraguard.clusters.links import MemoryLinks
from hydraguard.clusters.view import MemoryLinkView
from hydraguard.decide import decide
from hydraguard.facts import Facts
from hydraguard.gather import facts_from_log
from hydraguard.metrics import Metrics
from hydraguard.overrides import (
    MemoryOverrides,
    OverriddenLinks,
    Override,
    OverridesFull,
    RedisOverrides,
)
from hydraguard.policy import parse_policy
from hydraguard.policy.budget_model import LinkConfig
from hydraguard.startup import ConfigError

from .redis_util import FakeClock, delete_prefix, require_redis, unique_prefix


def ov(kind, account, until, at=0.0):
    return Override(kind, account, until, "peer:127.0.0.1", at)


async def test_memory_overrides_expire_and_deny_wins():
    clock = FakeClock(1000.0)
    o = MemoryOverrides(clock, max_entries=2)
    assert o.lookup("a") is None and not o.detached("a")
    await o.put(ov("allow", "a", 1010.0))
    await o.put(ov("deny", "a", 1005.0))
    assert o.lookup("a") == "deny" and o.lookup(None) is None
    assert o.counts() == {"allow": 1, "deny": 1, "detach": 0}
    with pytest.raises(OverridesFull):
        await o.put(ov("detach", "b", 1100.0))
    clock.advance(5)  # the deny expires at 1005
    assert o.lookup("a") == "allow"
    await o.put(ov("detach", "b", 1100.0))  # room again
    assert o.detached("b") and not o.detached("a")
    clock.advance(10)
    assert o.lookup("a") is None
    assert [(x.kind, x.account) for x in o.active()] == [("detach", "b")]
    assert await o.remove("detach", "b") and not await o.remove("detach", "b")


@pytest.mark.redis
async def test_redis_overrides_are_shared_and_pruned():
    from hydraguard.budgets.redis_state import RedisBudgetState

    url = require_redis()
    prefix = unique_prefix()
    clock = FakeClock(1_000_000.0)
    s1 = RedisBudgetState(url, prefix=prefix, clock=clock)
    s2 = RedisBudgetState(url, prefix=prefix, clock=clock)
    try:
        one, two = RedisOverrides(s1, max_entries=2), RedisOverrides(s2, max_entries=2)
        await one.put(ov("deny", "acct_a", clock.t + 10, clock.t))
        assert two.lookup("acct_a") is None  # not read yet
        await two.sync()
        assert two.lookup("acct_a") == "deny"
        assert two.get("deny", "acct_a") == ov("deny", "acct_a", clock.t + 10, clock.t)
        await two.put(ov("allow", "acct_b", clock.t + 100, clock.t))
        with pytest.raises(OverridesFull):
            await one.put(ov("detach", "acct_c", clock.t + 100, clock.t))
        clock.advance(20)  # acct_a's deny expired: the next write prunes it in Redis
        await one.put(ov("detach", "acct_c", clock.t + 100, clock.t))
        raw = await s1.client.hkeys(f"{s1.keyspace}:{{admin}}:overrides")
        assert sorted(raw) == [b"allow:acct_b", b"detach:acct_c"]
        await two.sync()
        assert (two.lookup("acct_a"), two.lookup("acct_b"), two.detached("acct_c")) == (
            None, "allow", True)
        assert await one.remove("allow", "acct_b") and not await one.remove("allow", "acct_b")
        await two.sync()
        assert two.lookup("acct_b") is None
    finally:
        await s1.close()
        await s2.close()
        delete_prefix(url, prefix)


RULES = (LinkRule("ip", min_accounts=3, max_accounts=100),
         LinkRule("tls_ua", min_accounts=3, max_accounts=100),
         LinkRule("template", min_accounts=3, max_accounts=100))
CONFIG = LinkConfig(600.0, 1000, RULES)


async def test_memory_link_view_members_why_and_evidence():
    clock = FakeClock(5000.0)
    links = MemoryLinks(CONFIG, clock)
    # a flagged exit (0.7) and a template (0.7) shared: the third account links the first
    # three (1.4 >= 1), the fourth joins; each has its own TLS fingerprint (links nothing)
    for i, a in enumerate(["a0", "a1", "a2", "a3"]):
        clock.advance(1)
        links.observe(a, {"ip": "192.0.2.1", "tls_ua": f"ja4-{i}|ua", "template": "tpl"},
                      flagged=True)
    links.observe("lone", {"ip": "192.0.2.99"})
    view = links.view()
    assert isinstance(view, MemoryLinkView)
    (c,) = await view.top()
    assert (c.id, c.members, c.evidence) == (cluster_id("a0"), ["a0", "a1", "a2", "a3"],
                                             {"ip": 1, "template": 1})
    assert await view.members(cluster_id("a0")) == ["a0", "a1", "a2", "a3"]
    assert await view.members(cluster_id("lone")) is None
    assert await view.summary() == (1, 4)
    assert [(e.kind, e.value, e.accounts, e.linking, e.first_seen, e.last_seen)
            for e in await view.evidence(cluster_id("a0"))] == [
        ("ip", "192.0.2.1", 4, True, 5001.0, 5004.0),
        ("template", "tpl", 4, True, 5001.0, 5004.0)]
    assert await view.evidence(cluster_id("lone")) is None
    why = await view.why("a2")
    assert (why.cluster, why.size, why.first_seen) == (cluster_id("a0"), 4, 5003.0)
    assert why.link == {"members": 4, "score": 1.4, "kinds": {"ip": 1, "template": 1},
                        "flagged": True, "via": "a1", "age_s": 1.0}
    assert [(w.kind, w.value, w.accounts, w.linking, w.last_seen) for w in why.evidence] == [
        ("ip", "192.0.2.1", 4, True, 5003.0), ("template", "tpl", 4, True, 5003.0),
        ("tls_ua", "ja4-2|ua", 1, False, 5003.0)]
    lone = await view.why("lone")
    assert (lone.cluster, lone.size, lone.link) == (cluster_id("lone"), 1, None)
    assert [(w.kind, w.accounts, w.linking) for w in lone.evidence] == [("ip", 1, False)]
    clock.advance(700)  # out of the window: the evidence no longer says anything
    assert (await view.why("a2")).evidence == []


@pytest.mark.redis
async def test_redis_link_view_reads_the_shared_layout():
    from hydraguard.budgets.redis_state import RedisBudgetState
    from hydraguard.clusters.redis_links import RedisLinks, digest
    from hydraguard.clusters.view import RedisLinkView

    url = require_redis()
    prefix = unique_prefix()
    clock = FakeClock(5000.0)
    states = [RedisBudgetState(url, prefix=prefix, clock=clock) for _ in range(2)]
    one, two = (RedisLinks(s, "linked", CONFIG) for s in states)
    try:
        for i, a in enumerate(["a0", "a1", "a2", "a3"]):  # as in the memory test, on `one`
            clock.advance(1)
            ev = {"ip": "192.0.2.1", "tls_ua": f"ja4-{i}|ua", "template": "tpl"}
            one.observe(a, ev, flagged=True)
            await one.cluster_of(a, ev, flagged=True)
        await one.cluster_of("lone", {"ip": "192.0.2.99"})
        views = one.view(), two.view()
        assert isinstance(views[1], RedisLinkView)
        for view, ip, tpl in ((views[0], "192.0.2.1", "tpl"),
                              (views[1], "#" + digest("192.0.2.1"), "#" + digest("tpl"))):
            (c,) = await view.top()
            assert (c.id, c.members, c.evidence) == (
                cluster_id("a0"), ["a0", "a1", "a2", "a3"], {"ip": 1, "template": 1})
            assert await view.members(cluster_id("a0")) == ["a0", "a1", "a2", "a3"]
            assert await view.members(cluster_id("lone")) is None
            assert await view.summary() == (1, 4)
            assert [(e.kind, e.value, e.accounts, e.linking, e.first_seen, e.last_seen)
                    for e in await view.evidence(cluster_id("a0"))] == [
                ("ip", ip, 4, True, 5001.0, 5004.0), ("template", tpl, 4, True, 5001.0, 5004.0)]
            why = await view.why("a2")
            assert (why.cluster, why.size, why.first_seen) == (cluster_id("a0"), 4, 5003.0)
            assert why.link == {"members": 4, "score": 1.4, "kinds": {"ip": 1, "template": 1},
                                "flagged": True, "via": "a1", "age_s": 1.0}
            assert [(w.kind, w.value, w.accounts, w.linking) for w in why.evidence] == [
                ("ip", ip, 4, True), ("template", tpl, 4, True),
                ("tls_ua", "ja4-2|ua" if tpl == "tpl" else "#" + digest("ja4-2|ua"), 1, False)]
            lone = await view.why("lone")
            assert (lone.cluster, lone.size, lone.link) == (cluster_id("lone"), 1, None)
        clock.advance(700)  # out of the window: the evidence no longer says anything
        assert (await views[1].why("a2")).evidence == []
    finally:
        for s in states:
            await s.close()
        delete_prefix(url, prefix)


def test_detached_account_is_its_own_cluster_and_adds_no_evidence():
    clock = FakeClock(100.0)
    store = MemoryLinks(CONFIG, clock)
    o = MemoryOverrides(clock)
    o._entries[("detach", "d")] = ov("detach", "d", 1e9)
    links_made = []
    links = OverriddenLinks(store, o, lambda: links_made.append(1))
    ev = {"ip": "192.0.2.5", "template": "tpl"}
    assert links.observe("d", ev, flagged=True) == cluster_id("d")
    assert links.confirm("d", ev, flagged=True) is None
    for a in ("x", "y"):
        links.observe(a, ev, flagged=True)
    assert store.linker.cluster_size("x") == 1  # d's request was not recorded: 2 < 3
    assert links.observe("z", ev, flagged=True) == cluster_id("x")
    assert links_made == [1]  # z moved into x's cluster (x is its root: not a move)
    assert links.link_info("z")["members"] == 3
    links.observe("z", ev, flagged=True)
    assert links_made == [1]
    assert links.link_info("d") is None and links.stats()["clusters"] == 1


def samples(m: Metrics):
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}


def test_metrics_from_records_bounded_labels():
    gw = SimpleNamespace(policy=parse_policy("indicators:\n  headers: {}\n"),
                         backends=SimpleNamespace(state=None, links={}),
                         overrides=MemoryOverrides())
    m = Metrics(lambda: (gw, None))
    base = {"api": "openai.chat", "action": "allow", "rule": "default", "decision_us": 120}
    m.observe({**base, "geo": {"found": False, "error": "location lookup failed: x; "
                               "asn lookup failed: y"}, "signals": {"headers.proxy": True,
                                                                    "made.up": 1}}, None)
    m.observe({**base, "status": 502, "upstream_status": None, "enforced": True,
               "upstream_failure": "unreachable", "error": "connection refused"}, "upstream")
    m.observe({**base, "status": 200, "upstream_status": 200, "error": "stream cut"}, None)
    m.observe({**base, "status": 429, "upstream_status": 429}, None)
    m.observe({**base, "action": "deny", "rule": "admin_deny", "override": "deny",
               "status": 403, "upstream_status": None}, "permission")
    m.observe("not a record", None)  # type: ignore[arg-type]  # logged once, never raised
    s = samples(m)

    def v(name, **labels):
        return s.get((name, frozenset(labels.items())))

    assert v("hydraguard_geoip_lookups_total", result="error") == 1
    assert (v("hydraguard_geoip_errors_total", database="location"),
            v("hydraguard_geoip_errors_total", database="asn")) == (1, 1)
    assert v("hydraguard_signals_total", signal="headers.proxy") == 1
    assert v("hydraguard_signals_total", signal="other") == 1  # not in the catalogue
    assert {k: v("hydraguard_upstream_errors_total", kind=k) for k in
            ("unreachable", "interrupted", "http_429", "http_5xx")} == {
        "unreachable": 1, "interrupted": 1, "http_429": 1, "http_5xx": None}
    assert v("hydraguard_refusals_total", kind="permission") == 1
    assert v("hydraguard_override_requests_total", override="deny") == 1
    assert v("hydraguard_requests_total", api="openai.chat", action="allow", rule="default",
             stage="rule") == 4
    assert v("hydraguard_decision_seconds_count") == 5
    assert v("hydraguard_decision_seconds_bucket", le="0.00025") == 5
    m.state_call(0.0004, True)
    m.state_call(2.0, False)
    s = samples(m)
    assert (v("hydraguard_state_roundtrip_seconds_count", result="ok"),
            v("hydraguard_state_roundtrip_seconds_count", result="error")) == (1, 1)
    assert Metrics(lambda: (None, None)).registry is not m.registry  # one per Metrics


def test_deny_override_decides_first_and_replays():
    policy = parse_policy("rules:\n  - {id: all, action: allow}\n")
    f = Facts("r1", "POST", "/v1/messages", None, ipaddress.ip_address("192.0.2.1"),
              account="acct_1", api="anthropic.messages")
    assert decide(f, policy).rule == "all"
    f.override = "allow"
    assert decide(f, policy).rule == "all"  # allow lifts budgets, never rules
    f.override = "deny"
    d = decide(f, policy)
    assert (d.action, d.rule, d.kind, d.enforced) == ("deny", "admin_deny", "permission", True)
    rec = {"method": "POST", "path": "/v1/messages", "api": "anthropic.messages",
           "client_ip": "192.0.2.1", "account": "acct_1", "override": "deny"}
    assert decide(facts_from_log(rec)[0], policy).rule == "admin_deny"


def test_check_admin_addresses():
    assert check_admin("9901", ("127.0.0.1", 8080), None) == ("127.0.0.1", 9901)
    assert check_admin("[::1]:9901", ("127.0.0.1", 8080), None) == ("::1", 9901)
    assert check_admin("0.0.0.0:9901", ("127.0.0.1", 8080), "t") == ("0.0.0.0", 9901)
    with pytest.raises(ConfigError, match="beyond loopback"):
        check_admin("0.0.0.0:9901", ("127.0.0.1", 8080), None)
    with pytest.raises(ConfigError, match="never shares the proxy's port 8080"):
        check_admin("127.0.0.1:8080", ("127.0.0.1", 8080), None)
    with pytest.raises(ConfigError, match="--admin: port 70000"):
        check_admin("70000", None, None)
