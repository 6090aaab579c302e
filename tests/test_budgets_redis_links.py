"""Hydra linking shared through Redis: two replicas agree on one cluster id."""

from __future__ import annotations

import uuid

import pytest

from hydraguard.budgets import RedisBudgetState
from hydraguard.clusters import LinkRule
from hydraguard.clusters import cluster_id as _cluster_id
from hydraguard.clusters.redis_links import RedisLinks

from .redis_util import REDIS_URL, FakeClock, require_redis

RULES = (LinkRule("ip", min_accounts=5, max_accounts=50),)


@pytest.fixture
def replicas():
    url = require_redis(REDIS_URL)
    clock = FakeClock(1_000_000.0)
    prefix = f"hgtest{uuid.uuid4().hex[:8]}"
    states = [RedisBudgetState(url, prefix=prefix, timeout_ms=500, clock=clock)
              for _ in range(2)]
    links = [RedisLinks(s, "acct", 600.0, RULES) for s in states]
    yield links, clock
    import redis

    r = redis.Redis.from_url(url)
    for k in r.scan_iter(f"{prefix}:*"):
        r.delete(k)
    r.close()


async def test_few_accounts_on_one_ip_stay_separate(replicas):
    (a, b), _clock = replicas
    ids = [await (a if i % 2 else b).cluster_of(f"acct_{i}", {"ip": "198.51.100.7"})
           for i in range(4)]
    assert ids == [_cluster_id(f"acct_{i}") for i in range(4)]


async def test_replicas_agree_on_the_oldest_member(replicas):
    (a, b), clock = replicas
    for i in range(8):  # alternate replicas, one second apart
        clock.advance(1)
        got = await (a if i % 2 else b).cluster_of(f"acct_{i}", {"ip": "198.51.100.7"})
    root = _cluster_id("acct_0")
    assert got == root
    # every member, asked on either replica, now maps to the first-seen account
    for i in range(8):
        clock.advance(1)
        assert await a.cluster_of(f"acct_{i}", {"ip": "198.51.100.7"}) == root
        assert await b.cluster_of(f"acct_{i}", {"ip": None}) == root
    # an unrelated account with other evidence is its own cluster
    assert await a.cluster_of("acct_x", {"ip": "192.0.2.1"}) == _cluster_id("acct_x")


async def test_links_expire_after_two_windows(replicas):
    (a, b), clock = replicas
    for i in range(5):
        await a.cluster_of(f"acct_{i}", {"ip": "198.51.100.9"})
    assert await b.cluster_of("acct_4", {}) == _cluster_id("acct_0")
    clock.advance(1300)  # > 2 windows without evidence
    assert await b.cluster_of("acct_4", {}) == _cluster_id("acct_4")


async def test_huge_shared_ip_does_not_link(replicas):
    (a, _b), _clock = replicas
    for i in range(60):  # a carrier NAT: more than max_accounts
        got = await a.cluster_of(f"n_{i}", {"ip": "203.0.113.1"})
    assert got == _cluster_id("n_59")


async def test_redis_down_returns_none():
    clock = FakeClock(1000.0)
    s = RedisBudgetState("redis://127.0.0.1:1/0", timeout_ms=50, clock=clock)
    assert await RedisLinks(s, "acct", 600.0, RULES).cluster_of("a", {"ip": "x"}) is None
    await s.close()
