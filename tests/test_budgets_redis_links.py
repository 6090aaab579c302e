"""Hydra linking shared through Redis: the same clusters as the in-memory linker on the same
sequence, replicas agreeing on one id, expiry, why-records, bounded keys."""

from __future__ import annotations

import random
import uuid

import pytest

from hydraguard.budgets import RedisBudgetState
from hydraguard.budgets.redis_state import LAYOUT_VERSION
from hydraguard.clusters import ClusterLinker, LinkRule
from hydraguard.clusters import cluster_id as _cluster_id
from hydraguard.clusters.redis_links import RedisLinks
from hydraguard.policy.budget_model import LinkConfig

from .redis_util import REDIS_URL, FakeClock, require_redis

RULES = (LinkRule("ip", max_accounts=50), LinkRule("prefix"), LinkRule("asn"),
         LinkRule("template"))
CONFIG = LinkConfig(window_s=600.0, rules=RULES)


@pytest.fixture
def replicas():
    url = require_redis(REDIS_URL)
    clock = FakeClock(1_000_200.0)  # 200 s into an epoch of 600 s
    prefix = f"hgtest{uuid.uuid4().hex[:8]}"
    states = [RedisBudgetState(url, prefix=prefix, timeout_ms=2000, clock=clock)
              for _ in range(2)]
    links = [RedisLinks(s, "acct", CONFIG) for s in states]
    yield links, clock, prefix
    import redis

    r = redis.Redis.from_url(url)
    for k in r.scan_iter(f"{prefix}:*"):
        r.delete(k)
    r.close()


def _hydra(i: int) -> tuple[dict[str, str], bool]:
    x = f"203.0.{i % 3}.9"
    return {"ip": x, "prefix": x.rsplit(".", 1)[0] + ".0/24", "asn": "64600",
            "template": "tpl"}, True


async def test_one_shared_value_stays_apart(replicas):
    (a, b), clock, _ = replicas
    ids = []
    for i in range(6):  # six accounts behind one flagged exit, nothing else shared
        clock.advance(1)
        ids.append(await (a if i % 2 else b).cluster_of(f"acct_{i}", {"ip": "198.51.100.7"},
                                                         flagged=True))
    assert ids == [_cluster_id(f"acct_{i}") for i in range(6)]


async def test_replicas_agree_on_the_oldest_member(replicas):
    (a, b), clock, _ = replicas
    got = []
    for i in range(8):  # alternate replicas, one second apart
        clock.advance(1)
        ev, fl = _hydra(i)
        got.append(await (a if i % 2 else b).cluster_of(f"acct_{i}", ev, flagged=fl))
    root = _cluster_id("acct_0")
    # acct_2 is the third on the template and the ASN (0.7 + 0.3 through flagged networks):
    # it links acct_1 and acct_0; from then on each account joins with its first request
    assert got == [_cluster_id("acct_0"), _cluster_id("acct_1")] + [root] * 6
    for i in range(8):  # every member, asked on either replica, maps to the first-seen
        clock.advance(1)
        assert await a.cluster_of(f"acct_{i}", {}) == root
        assert await b.cluster_of(f"acct_{i}", {"ip": None}) == root
    # acct_5: its exit had one account before it; the ASN and template it shares with acct_4
    assert b.link_info("acct_5") == {
        "members": 8, "score": 1.0, "kinds": {"asn": 1, "template": 1}, "flagged": True,
        "via": "acct_4", "age_s": 10.0}
    assert a.last_answer("acct_7") == root
    # an unrelated account with other evidence is its own cluster
    assert await a.cluster_of("acct_x", {"ip": "192.0.2.1"}) == _cluster_id("acct_x")


def _sequence(seed: int) -> list[tuple[float, str, dict[str, str], bool]]:
    """A mixed day in miniature: a hydra rotating through flagged exits, an office NAT, a
    SaaS with two keys, neighbours of an exit, users of one tool."""
    rng = random.Random(seed)
    out = []
    t = 0.0
    exits = [f"46.10.{j}.{j + 50}" for j in range(5)]
    for i in range(40):
        for x in rng.sample(exits, 2):
            t += rng.uniform(0.5, 3)
            out.append((t, f"h{i}", {"ip": x, "prefix": x.rsplit(".", 1)[0] + ".0/24",
                                     "asn": "64496", "template": f"tpl-{rng.randrange(3)}"},
                        True))
        t += rng.uniform(0.5, 3)
        who = rng.choice(["office", "saas", "nb", "tool"])
        n = rng.randrange(6)
        if who == "office":
            out.append((t, f"o{n}", {"ip": "62.80.0.9", "prefix": "62.80.0.0/24",
                                     "asn": "64503", "template": f"o{rng.randrange(99)}"}, False))
        elif who == "saas":
            out.append((t, f"s{n % 2}", {"ip": f"91.100.0.{rng.randrange(3)}",
                                         "prefix": "91.100.0.0/24", "asn": "65539",
                                         "template": "product"}, True))
        elif who == "nb":
            out.append((t, f"n{n}", {"ip": f"46.10.0.{100 + n}", "prefix": "46.10.0.0/24",
                                     "asn": "64496", "template": f"n{rng.randrange(99)}"},
                        False))
        else:
            out.append((t, f"u{n}", {"ip": f"81.30.{n}.5", "prefix": f"81.30.{n}.0/24",
                                     "asn": "64498", "template": "tool"}, False))
    return out


@pytest.mark.parametrize("seed", [1, 2])
async def test_memory_and_redis_give_the_same_clusters(replicas, seed):
    (a, b), clock, _ = replicas
    t0 = clock.t
    mem_clock = FakeClock(t0)
    mem = ClusterLinker(config=CONFIG, clock=mem_clock)
    seq = _sequence(seed)
    for n, (t, acct, ev, fl) in enumerate(seq):
        clock.t = mem_clock.t = t0 + t
        mem.observe(acct, ev, flagged=fl)
        shared = await (a if n % 2 else b).cluster_of(acct, ev, flagged=fl)
        assert shared == mem.cluster_of(acct), (n, acct)
        assert (a if n % 2 else b).link_info(acct) == mem.link_info(acct), (n, acct)
    hydra = {mem.cluster_of(f"h{i}") for i in range(40)}
    assert hydra == {_cluster_id("h0")} and mem.cluster_size("h0") == 40
    others = [x for x in {acct for _, acct, _, _ in seq} if not x.startswith("h")]
    assert [mem.cluster_size(x) for x in others] == [1] * len(others)


async def test_links_expire_and_keys_carry_ttls(replicas):
    (a, b), clock, prefix = replicas
    for i in range(5):
        clock.advance(1)
        ev, fl = _hydra(i)
        await a.cluster_of(f"acct_{i}", ev, flagged=fl)
    assert await b.cluster_of("acct_4", {}) == _cluster_id("acct_0")
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = [k.decode() for k in r.scan_iter(f"{prefix}:*")]
    assert keys and all(k.startswith(f"{prefix}:v{LAYOUT_VERSION}:{{links:acct}}:")
                        for k in keys)
    assert all(r.pttl(k) > 0 for k in keys)
    r.close()
    clock.advance(1300)  # > 2 windows without evidence
    assert await b.cluster_of("acct_4", {}) == _cluster_id("acct_4")
    assert b.link_info("acct_4") is None


async def test_huge_shared_value_does_not_link(replicas):
    (a, _b), clock, _ = replicas
    got = None
    for i in range(60):  # a carrier NAT and one template: more than max_accounts (50) on ip
        clock.advance(1)
        got = await a.cluster_of(f"n_{i}", {"ip": "203.0.113.1", "template": f"t{i}"},
                                 flagged=True)
    assert got == _cluster_id("n_59")


async def test_redis_down_returns_none_and_observe_answers_locally():
    clock = FakeClock(1000.0)
    s = RedisBudgetState("redis://127.0.0.1:1/0", timeout_ms=50, clock=clock)
    links = RedisLinks(s, "acct", CONFIG)
    assert await links.cluster_of("a", {"ip": "x"}) is None
    for i in range(4):
        clock.advance(1)
        ev, fl = _hydra(i)
        local = links.observe(f"acct_{i}", ev, flagged=fl)
    assert local == _cluster_id("acct_0") and links.link_info("acct_3")["members"] == 4
    await s.close()
