"""The budget path (cluster resolution, budget driver on the backends the one factory
builds) with an injected clock and MemoryBudgetState: amounts, weights, multipliers, clamp,
cap_max_tokens, shadow, commit/release, refusals with exact headers, hydra linking."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from hydraguard.apis import Usage
from hydraguard.budgets.backends import open_backends
from hydraguard.budgets.driver import Admission, BudgetDriver
from hydraguard.clusters import ClusterResolver
from hydraguard.facts import Facts
from hydraguard.gather import set_cluster
from hydraguard.policy import parse_policy

from .redis_util import FakeClock, free_port

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z

BASE = """
clusters:
  - id: acct
    key: [account]
budgets:
"""


class Metering:
    """The budget path wired as the Gateway wires it (pipeline.Gateway)."""

    def __init__(self, config, clock, previous: Metering | None = None) -> None:
        self.settings = config
        self.backends = open_backends(config, clock,
                                      previous=previous.backends if previous else None)
        self.state = self.backends.state
        self.clusters = ClusterResolver(config.clusters, self.backends.links)
        self.driver = BudgetDriver(config.budgets, self.state, self.clusters, clock,
                                   self.backends.history)
        self.linkers = {k: getattr(v, "linker", None) for k, v in self.backends.links.items()}

    def resolve_cluster(self, f: Facts) -> None:
        set_cluster(f, self.clusters.resolve(f))

    async def admit(self, f: Facts) -> Admission:
        adm = await self.driver.admit(f)
        if adm.cluster is not None and adm.cluster is not f.cluster_ref:
            set_cluster(f, adm.cluster)
        return adm

    async def settle(self, a: Admission, usage, *, failed: bool):
        return await self.driver.settle(a, usage, failed=failed)

    async def close(self) -> None:
        await self.backends.close()


def metering(budgets: str, clusters: str | None = None, state: str = "") -> tuple[
        Metering, FakeClock]:
    text = state + (clusters if clusters is not None else BASE) + budgets
    clock = FakeClock(T0)
    return Metering(parse_policy(text, "r.yaml").budgets, clock), clock


def facts(account="acct_a", ip="192.0.2.1", *, api="anthropic.messages", model="claude-x",
          max_output=100, est=50, provider=None, signals=None) -> Facts:
    f = Facts(request_id="r", method="POST", path="/v1/messages", peer_ip=None,
              client_ip=ipaddress.ip_address(ip) if ip else None, account=account, api=api,
              provider=provider or ("anthropic" if api.startswith("anthropic") else "openai"),
              model=model, max_output=max_output, input_tokens_est=est,
              signals=dict(signals or {}))
    return f


def run(coro):
    return asyncio.run(coro)


async def admit(m: Metering, f: Facts):
    m.resolve_cluster(f)
    return await m.admit(f)


def test_reservation_amount_weights_multiplier_clamp():
    m, _ = metering("""
  - id: b
    windows: [{per: minute, tokens: 100000}]
    weights: {input: 2, output: 3, cache_read: 0.1, cache_creation: 1.25}
    model_multipliers: {"claude-opus-*": 5}
    max_output_reserve: 40
""")

    async def go():
        a = await admit(m, facts(max_output=100, est=50))  # 2*50 + 3*min(100, 40) = 220
        assert a.log["budget"][0]["reserved"] == 220
        b = await admit(m, facts(model="claude-opus-4", max_output=10, est=7))  # (14+30)*5
        assert b.log["budget"][0]["reserved"] == 220
        c = await admit(m, facts(max_output=None, est=0))  # default_output = clamp = 40
        assert c.log["budget"][0]["reserved"] == 120
        # commit: 2*10 + 0.1*1000 + 1.25*8 + 3*7 = 151 (x1)
        out = await m.settle(a, Usage(10, 7, 8, 1000), failed=False)
        assert out["budget"][0] == {"id": "b", "window": "minute", "limit": 100000,
                                    "reserved": 220, "charged": 151,
                                    "remaining": 100000 - 220 + 220 - 151}
        out = await m.settle(b, Usage(3, 4), failed=False)  # (6 + 12) * 5
        assert out["budget"][0]["charged"] == 90
        levels = await m.state.peek("b:acct:account=acct_a", m.settings.budgets[0].windows)
        assert levels[0].remaining == 100000 - 151 - 90 - 120

    run(go())


@pytest.mark.parametrize("count,expect_res,expect_charge", [
    ("input", 50, 10 + 4 + 6), ("output", 40, 7), ("total", 90, 27)])
def test_count_modes(count, expect_res, expect_charge):
    m, _ = metering(f"""
  - id: b
    windows: [{{per: minute, tokens: 1000}}]
    count: {count}
    max_output_reserve: 40
""")

    async def go():
        a = await admit(m, facts(max_output=100, est=50))
        assert a.log["budget"][0]["reserved"] == expect_res
        out = await m.settle(a, Usage(10, 7, 4, 6), failed=False)
        assert out["budget"][0]["charged"] == expect_charge

    run(go())


def test_refusal_exact_retry_after_and_headers_then_refill():
    m, clock = metering("""
  - id: b
    windows: [{seconds: 1000, tokens: 1000}, {per: day, tokens: 1000000}]
""")  # 1 token/s in the first window

    async def go():
        a = await admit(m, facts(max_output=400, est=100))  # 500
        assert not a.refused
        assert a.headers == {"anthropic-ratelimit-tokens-limit": "1000",
                             "anthropic-ratelimit-tokens-remaining": "500",
                             "anthropic-ratelimit-tokens-reset": "2023-11-14T22:21:40Z"}
        await m.settle(a, Usage(100, 400), failed=False)
        b = await admit(m, facts(max_output=300, est=100))  # 400 -> level 900
        assert not b.refused and b.log["budget"][0]["remaining"] == 100
        c = await admit(m, facts(max_output=300, est=100))  # needs 400, 100 left: 300 s
        assert c.refused and c.rule == "b" and c.kind == "rate_limit"
        assert c.retry_after_s == pytest.approx(300.0)
        assert c.reason == "token budget 'b' of this cluster is spent for window 1000s; " \
            "retry in 300s"
        assert c.headers == {"anthropic-ratelimit-tokens-limit": "1000",
                             "anthropic-ratelimit-tokens-remaining": "100",
                             "anthropic-ratelimit-tokens-reset": "2023-11-14T22:28:20Z"}
        assert c.log["budget"] == [{"id": "b", "window": "1000s", "limit": 1000,
                                    "reserved": 0, "charged": 0, "needed": 400,
                                    "remaining": 100, "refused": True}]
        assert await m.settle(c, None, failed=True) == c.log
        clock.advance(299)
        assert (await admit(m, facts(max_output=300, est=100))).refused
        clock.advance(1)
        assert not (await admit(m, facts(max_output=300, est=100))).refused

    run(go())


def test_openai_headers_and_never_fits():
    m, _ = metering("""
  - id: b
    windows: [{per: minute, tokens: 600}]
""")

    async def go():
        a = await admit(m, facts(api="openai.chat", max_output=100, est=20))
        assert a.headers == {"x-ratelimit-limit-tokens": "600",
                             "x-ratelimit-remaining-tokens": "480",
                             "x-ratelimit-reset-tokens": "12s"}
        big = await admit(m, facts(api="openai.chat", max_output=4096, est=20))
        assert big.refused and big.retry_after_s == 60.0
        assert big.reason == "request needs 4116 tokens, more than token budget 'b' allows " \
            "per minute (600)"

    run(go())


def test_failed_request_releases_and_missing_usage_keeps_reservation():
    m, _ = metering("""
  - id: b
    windows: [{per: day, tokens: 1000}]
""")
    w = m.settings.budgets[0].windows

    async def go():
        a = await admit(m, facts(max_output=100, est=50))
        out = await m.settle(a, None, failed=True)
        assert out["budget"][0]["charged"] == 0 and out["budget"][0]["remaining"] == 1000
        assert (await m.state.peek("b:acct:account=acct_a", w))[0].remaining == 1000
        b = await admit(m, facts(max_output=100, est=50))
        out = await m.settle(b, None, failed=False)
        assert out["budget"][0]["charged"] == 150
        assert (await m.state.peek("b:acct:account=acct_a", w))[0].remaining == 850
        assert await m.settle(b, Usage(1, 1), failed=False) == out  # settles once

    run(go())


def test_cap_max_tokens_instead_of_refusing():
    m, _ = metering("""
  - id: b
    windows: [{per: day, tokens: 1000}]
    on_exceed: cap_max_tokens
    cap_to: 50
""")

    async def go():
        a = await admit(m, facts(max_output=800, est=100))  # 900
        assert not a.refused and a.max_output_cap is None
        b = await admit(m, facts(max_output=800, est=20))  # 820 no; capped 70 fits (100 left)
        assert not b.refused and b.max_output_cap == 50
        assert b.log["budget"][0] == {"id": "b", "window": "day", "limit": 1000, "reserved": 70,
                                      "charged": None, "remaining": 30, "capped_to": 50}
        c = await admit(m, facts(max_output=800, est=20))  # capped 70 > 30: refused
        assert c.refused and c.max_output_cap is None

    run(go())


def test_shadow_budget_refuses_nothing_and_logs():
    m, _ = metering("""
  - id: s
    windows: [{per: day, tokens: 300}]
    shadow: true
""")

    async def go():
        a = await admit(m, facts(max_output=100, est=100))
        assert not a.refused and a.headers == {} and "budget_shadow" not in a.log
        assert a.log["budget"][0]["shadow"] is True
        c = await admit(m, facts(max_output=100, est=100))  # 200 > 100 left: would refuse
        assert not c.refused and c.max_output_cap is None
        assert c.log["budget_shadow"] == [{"id": "s", "window": "day", "needed": 200,
                                           "remaining": 100, "retry_after": 28800.0}]
        assert c.log["budget"][0]["charged"] == 0  # not charged: mirrors enforcement
        out = await m.settle(c, Usage(100, 100), failed=False)
        assert out["budget_shadow"] and out["budget"][0]["charged"] == 0

    run(go())


def test_second_budget_refusal_releases_first_and_cluster_selection():
    m, _ = metering("""
  - id: wide
    windows: [{per: day, tokens: 100000}]
  - id: opus
    when: {model: "claude-opus-*"}
    clusters: [acct]
    windows: [{per: day, tokens: 100}]
""")
    wide = m.settings.budgets[0].windows

    async def go():
        a = await admit(m, facts(model="claude-opus-4", max_output=100, est=50))
        assert a.refused and a.rule == "opus"
        assert a.log["budget"][0] == {"id": "wide", "window": "day", "limit": 100000,
                                      "reserved": 0, "charged": 0, "remaining": 99850}
        assert (await m.state.peek("wide:acct:account=acct_a", wide))[0].remaining == 100000
        b = await admit(m, facts(model="claude-haiku", max_output=100, est=50))
        assert not b.refused and [e["id"] for e in b.log["budget"]] == ["wide"]

    run(go())


def test_non_model_calls_and_unmatched_requests_have_no_cluster():
    m, _ = metering("""
  - id: b
    windows: [{per: day, tokens: 10}]
""", clusters="""
clusters:
  - id: only-cn
    when: {country: CN}
    key: [account]
budgets:
""")

    async def go():
        f = facts()
        a = await admit(m, f)
        assert f.cluster is None and not a.refused and a.log == {}

    run(go())
    f = facts()
    f.api = None
    m.resolve_cluster(f)
    assert f.cluster is None


def test_key_attributes():
    m, _ = metering("", clusters="""
clusters:
  - id: k
    key: [account, ip, prefix, asn, country, ja4, api, model]
""")
    f = facts(ip="2001:db8:1::7", signals={"tls.ja4": "t13d1516h2_8daaf6152771_02713d6af862"})
    m.resolve_cluster(f)
    assert f.cluster == ("k:account=acct_a|ip=2001:db8:1::7|prefix=2001:db8:1::/64|asn=-|"
                         "country=-|ja4=t13d1516h2_8daaf6152771_02713d6af862|"
                         "api=anthropic.messages|model=claude-x")
    f = facts(ip="192.0.2.77")
    m.resolve_cluster(f)
    assert "|prefix=192.0.2.0/24|" in f.cluster


LINKED = """
clusters:
  - id: acct
    key: [cluster]
    link:
      window: 600
      evidence:
        - {kind: ip, max_accounts: 50}
        - {kind: prefix}
        - {kind: template}
budgets:
  - id: b
    windows: [{per: day, tokens: 1000}]
"""
PROXY = {"ip.residential_proxy": True}  # a flagged network


def hydra_facts(i: int, ip: str = "198.51.100.70", tpl: str = "tpl-1", **kw) -> Facts:
    return facts(account=f"acct_{i}", ip=ip, signals={**PROXY, "template.id": tpl}, **kw)


def test_hydra_linking_by_flagged_exit_and_template_shares_one_budget():
    m, clock = metering("", clusters=LINKED)

    async def go():
        refs = []
        for i in range(8):
            clock.advance(1)
            f = hydra_facts(i, max_output=90, est=10)
            a = await admit(m, f)
            refs.append((f.cluster_ref, a.refused))
        root = refs[0][0].name
        # acct_1 is its own cluster (2 accounts, below min_accounts 3); the third links all
        assert [r.name == root for r, _ in refs] == [True, False] + [True] * 6
        assert [r.link for r, _ in refs[:2]] == [None, None]
        assert dict(refs[2][0].link) == {"members": 3, "score": 1.4, "flagged": True,
                                         "kinds": {"ip": 1, "template": 1}, "via": "acct_1",
                                         "age_s": 0.0}
        # the shared budget: acct_0 and acct_2..7 charge one key, 7 x 100
        assert [r for _, r in refs] == [False] * 8
        for i in range(8, 14):
            f = hydra_facts(i, max_output=90, est=10)
            a = await admit(m, f)
            assert f.cluster == root and f.cluster_ref.link["members"] == i + 1
            refs.append((f.cluster_ref, a.refused))
        assert [r for _, r in refs[8:]] == [False] * 3 + [True] * 3  # 10 x 100 = the budget
        # the same exit and template through an ordinary network: 0.35 + 0.35 < 1
        seen = set()
        for i in range(4):
            f = facts(account=f"office_{i}", ip="192.0.2.9", signals={"template.id": "tpl-o"})
            m.resolve_cluster(f)
            seen.add(f.cluster)
            assert f.cluster_ref.link is None
        assert len(seen) == 4
        # links last one to two windows after their evidence (epochs of 600 s)
        clock.advance(1200)
        f = facts(account="acct_13", ip="192.0.2.200")
        m.resolve_cluster(f)
        assert f.cluster != root and f.cluster_ref.link is None

    run(go())


def test_hydra_linking_across_exits_by_two_templates_within_minutes():
    """Accounts on flagged exits in different /24s that send the same two templates within
    minutes: template 0.7 + 0.7 (two values of a kind add up in a burst)."""
    m, clock = metering("", clusters=LINKED)
    ids = []
    for i in range(5):
        for tpl in ("tpl-a", "tpl-b"):
            clock.advance(2)
            f = hydra_facts(i, ip=f"198.51.{100 + i}.10", tpl=tpl)
            m.resolve_cluster(f)
        ids.append(f.cluster)
    # t_2 is the third on both templates: it links t_0 and t_1 (root t_0); t_3, t_4 join
    assert ids[2:] == [ids[0]] * 3 and ids[1] != ids[0]
    g = facts(account="acct_2", ip="198.51.102.10")
    m.resolve_cluster(g)
    assert g.cluster == ids[0] and g.cluster_ref.link == {
        "members": 5, "score": 1.4, "kinds": {"template": 2}, "flagged": True,
        "via": "acct_1", "age_s": 8.0}


def test_redis_down_fail_open_and_closed(caplog):
    port = free_port()  # nothing listens there
    for on_error, refused in (("open", False), ("closed", True)):
        m, _ = metering("""
  - id: b
    windows: [{per: day, tokens: 1000}]
""", state=f"state: {{backend: redis, redis_url: 'redis://127.0.0.1:{port}/0', "
            f"timeout_ms: 100, on_error: {on_error}, retry_after: 2, replicas: 4}}\n")

        async def go(m=m, refused=refused):
            for _ in range(4):  # the third failure in a row opens the breaker
                a = await admit(m, facts())
                assert a.refused is refused and a.degraded
                assert a.log["state_degraded"] is True
                if refused:
                    assert a.log["state_backend"] == "none"
                    assert a.retry_after_s == 2.0 and a.reason.startswith(
                        "token budget state is unavailable (fail-closed)")
                else:  # this replica's quarter: 250 tokens, 150 reserved, 10 charged
                    assert a.log["state_backend"] == "local"
                    assert a.log["budget"][0]["degraded"] is True
                    assert a.log["budget"][0]["limit"] == 250
                    out = await m.settle(a, Usage(5, 5), failed=False)
                    assert out["budget"][0]["charged"] == 10
            await m.close()

        run(go())
    downs = [r for r in caplog.records if "budget state DOWN" in r.getMessage()]
    assert len(downs) == 2  # one per Metering (state change), not per request


def test_adopt_keeps_levels_and_links_on_reload():
    m, clock = metering("", clusters=LINKED)
    for i in range(5):
        clock.advance(1)
        m.resolve_cluster(hydra_facts(i, ip="198.51.100.9"))

    async def go():
        a = await admit(m, hydra_facts(4, ip="198.51.100.9", max_output=500, est=0))
        assert not a.refused
        text = LINKED.replace("tokens: 1000", "tokens: 900")
        m2 = Metering(parse_policy(text, "r.yaml").budgets, clock, previous=m)
        assert m2.state is m.state and m2.linkers["acct"] is m.linkers["acct"]
        b = await admit(m2, hydra_facts(1, ip="198.51.100.9", max_output=500, est=0))
        assert b.refused  # 500 already spent by the linked cluster, 900 is the new limit
        changed = LINKED.replace("window: 600", "window: 60")
        m3 = Metering(parse_policy(changed, "r.yaml").budgets, clock, previous=m)
        assert "acct" in m3.linkers and m3.linkers["acct"] is not m.linkers["acct"]
        weights = LINKED.replace("{kind: prefix}", "{kind: prefix, weight: 0.2}")
        m4 = Metering(parse_policy(weights, "r.yaml").budgets, clock, previous=m)
        assert m4.linkers["acct"] is not m.linkers["acct"]

    run(go())


@pytest.mark.redis
def test_shared_linking_reserves_once_per_request():
    """With linking shared through Redis, a request whose shared cluster id is the one it was
    reserved under is not reserved a second time (only its `link` answer is taken)."""
    from .redis_util import delete_prefix, require_redis, unique_prefix

    url, prefix = require_redis(), unique_prefix()
    text = (f"state: {{backend: redis, redis_url: '{url}', prefix: {prefix}}}\n"
            "clusters:\n  - {id: a, key: [cluster], link: {window: 3600, evidence: [{kind: ip}]}}\n"
            "budgets:\n  - {id: b, windows: [{per: minute, tokens: 100000}]}\n")

    async def go():
        m = Metering(parse_policy(text, "r.yaml").budgets, FakeClock(T0))
        calls = []
        orig = m.state.reserve_many

        async def counted(*a, **k):
            calls.append(1)
            return await orig(*a, **k)

        m.state.reserve_many = counted
        try:
            for i in range(5):
                f = facts(account=f"solo{i}", ip=f"192.0.2.{i + 1}")
                a = await admit(m, f)
                assert not a.refused and a.log["budget"][0]["reserved"] == 150
        finally:
            await m.close()
        assert len(calls) == 5

    try:
        asyncio.run(go())
    finally:
        delete_prefix(url, prefix)
