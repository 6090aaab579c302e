"""Probation budgets: new accounts arriving through one network share one budget until they
are established (age, requests served, tokens charged, or a known list)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from hydraguard.apis import Usage
from hydraguard.budgets.history import AccountHistory
from hydraguard.facts import Facts
from hydraguard.geo import GeoInfo
from hydraguard.policy import PolicyError, parse_policy
from hydraguard.policy.budget_model import ProbationSpec

from .redis_util import FakeClock
from .test_metering_budgets import Metering

T0 = 1_700_000_000.0

RULES = """
version: 1
clusters:
  - {id: acct, key: [account]}
budgets:
  - id: new-on-proxies
    when: {signal: ip.residential_proxy}
    probation: {key: [asn], min_age: 3600, min_requests: 3}
    windows: [{per: minute, tokens: 1000}]
  - id: per-account
    windows: [{per: minute, tokens: 100000}]
"""


def facts(account: str, ip: str = "198.51.100.7", asn: int = 64500, flagged: bool = True,
          est: int = 100, out: int = 200) -> Facts:
    return Facts(request_id="r", method="POST", path="/v1/messages", peer_ip=None,
                 client_ip=ipaddress.ip_address(ip), account=account, api="anthropic.messages",
                 model="m", max_output=out, input_tokens_est=est,
                 geo=GeoInfo(found=True, country="US", asn=asn),
                 signals={"ip.residential_proxy": True} if flagged else {})


def test_history_packs_and_bounds():
    clock = FakeClock(T0)
    h = AccountHistory(clock, max_accounts=2)
    assert h.seen("a") == (T0, 0, 0)
    clock.advance(10)
    h.served("a", 150)
    h.served("a", 50)
    assert h.seen("a") == (T0, 2, 200)
    h.seen("b")
    h.seen("c")  # drops the least recently active: a (b and c are newer)
    assert len(h) == 2 and h.seen("a")[0] == T0 + 10  # a starts again as new
    spec = ProbationSpec(min_age_s=5, min_requests=1, min_tokens=10, known=frozenset({"k"}))
    assert h.established("k", spec) and not h.established(None, spec)
    assert not h.established("a", spec)  # just re-added: no age, no requests
    clock.advance(6)
    h.served("a", 10)
    assert h.established("a", spec)


def test_new_accounts_of_one_network_share_the_probation_budget():
    async def go():
        clock = FakeClock(T0)
        m = Metering(parse_policy(RULES, "r.yaml").budgets, clock)
        # each request reserves 300 (100 in + 200 out); three new accounts fit, the 4th not
        got = []
        for i in range(4):
            f = facts(f"new{i}")
            m.resolve_cluster(f)
            a = await m.admit(f)
            got.append((a.refused, a.rule))
            if not a.refused:
                await m.settle(a, Usage(100, 200), failed=False)
        assert got == [(False, ""), (False, ""), (False, ""), (True, "new-on-proxies")]
        f = facts("new9")
        m.resolve_cluster(f)
        a = await m.admit(f)
        assert a.log["budget"][0]["probation"] == "asn=64500"
        assert "on probation on this network (asn=64500)" in a.reason
        # another network, or a request not through a flagged network, is not affected
        for other in (facts("new5", asn=64501), facts("new6", flagged=False)):
            m.resolve_cluster(other)
            b = await m.admit(other)
            assert not b.refused
            assert [e["id"] for e in b.log["budget"]] == (
                ["new-on-proxies", "per-account"] if other.signals else ["per-account"])
        await m.close()

    asyncio.run(go())


def test_an_established_account_leaves_probation():
    async def go():
        clock = FakeClock(T0)
        m = Metering(parse_policy(RULES, "r.yaml").budgets, clock)
        f = facts("old")
        for _ in range(3):  # served 3 requests ...
            m.resolve_cluster(f)
            a = await m.admit(f)
            assert not a.refused and a.log["budget"][0]["id"] == "new-on-proxies"
            await m.settle(a, Usage(10, 10), failed=False)
        clock.advance(3600)  # ... and seen an hour ago: established
        m.resolve_cluster(f)
        a = await m.admit(f)
        assert [e["id"] for e in a.log["budget"]] == ["per-account"]
        await m.close()

    asyncio.run(go())


def test_known_accounts_file_and_errors(tmp_path):
    known = tmp_path / "known.txt"
    known.write_text("# enterprise customers\nacct_0123456789abcdef0123\n")
    r = tmp_path / "r.yaml"
    r.write_text(RULES.replace("min_requests: 3}", "min_requests: 3, known_accounts: known.txt}"))
    from hydraguard.policy import load_policy

    p = load_policy(str(r))
    assert p.budgets.budgets[0].probation.known == frozenset({"acct_0123456789abcdef0123"})
    known.write_text("sk-ant-not-a-hash\n")
    with pytest.raises(PolicyError) as e:
        load_policy(str(r))
    assert "known.txt:1: 'sk-ant-not-a-hash' is not an account hash" in str(e.value)
    with pytest.raises(PolicyError) as e:
        parse_policy(RULES.replace("key: [asn]", "key: [account]"), "r.yaml")
    assert "probation.key" in str(e.value)


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_request_larger_than_the_pool_fits_an_untouched_pool_once(backend):
    """A new account whose request needs more than the whole pool (long prompt) is admitted
    when the pool is untouched, charged in full (the pool then owes it), instead of never."""
    from .redis_util import delete_prefix, require_redis, unique_prefix

    rules, url, prefix = RULES, None, None
    if backend == "redis":
        url, prefix = require_redis(), unique_prefix()
        rules += f"state: {{backend: redis, redis_url: '{url}', prefix: {prefix}}}\n"

    async def go():
        clock = FakeClock(T0)
        m = Metering(parse_policy(rules, "r.yaml").budgets, clock)
        big = facts("big", est=1500, out=200)  # 1,700 > the pool's 1,000 per minute
        m.resolve_cluster(big)
        a = await m.admit(big)
        assert not a.refused
        assert [(e["id"], e["reserved"]) for e in a.log["budget"]] == [
            ("new-on-proxies", 1000), ("per-account", 1700)]
        await m.settle(a, Usage(1500, 200), failed=False)
        small = facts("small")  # 300: the pool owes 700 more than it holds
        m.resolve_cluster(small)
        b = await m.admit(small)
        assert (b.refused, b.rule) == (True, "new-on-proxies")
        assert b.retry_after_s == pytest.approx(60.0)  # 1,700 + 300 - 1,000 at 1,000/min
        clock.advance(60)
        c = await m.admit(small)
        assert not c.refused
        await m.close()

    try:
        asyncio.run(go())
    finally:
        if url is not None:
            delete_prefix(url, prefix)
