"""Budgets and hydra linking on a real 3-master Redis Cluster (started per module).

The backend (`state: {backend: redis, cluster: true}`) routes each script to the master of
its keys' hash slot (budgets/redis_cluster.py). Two real `hydraguard run` replicas share one
budget and one linked cluster through the cluster; the keys land on more than one master.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import anthropic
import pytest

from hydraguard.budgets.redis_state import LAYOUT_VERSION, RedisBudgetState
from hydraguard.budgets.spec import WindowSpec
from hydraguard_dev.procs import proxy

from .redis_cluster_util import running_cluster
from .test_e2e_budgets import EXITS, REDIS_RULES, _burst, _wait_lines, ant, key, msg

DAY = (WindowSpec("day", 100, 86400.0),)


@pytest.fixture(scope="module")
def cluster():
    with running_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def replicas(stub, cluster, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rcluster") / "cluster.yaml"
    # these tests are about sharing: a generous timeout, so a machine under heavy load does
    # not turn a slow call into the local-share fallback (which has tests of its own)
    text = REDIS_RULES.format(url=cluster.url, prefix="hgc", timeout=10000, on_error="open")
    rules.write_text(text.replace("on_error: open}", "on_error: open, cluster: true}"))
    assert "cluster: true" in rules.read_text()
    (rules.parent / "exits.txt").write_text(EXITS)
    with proxy(stub.url, rules) as a, proxy(stub.url, rules) as b:
        yield a, b


def test_state_routes_each_group_to_its_master(cluster):
    """Reserve/settle on 30 groups through the cluster backend: every answer exact, the
    buckets spread over all 3 masters; a stale slot map is corrected by MOVED."""
    async def go():
        st = RedisBudgetState(cluster.url, prefix="hgu", cluster=True)
        try:
            groups = [f"g{i}" for i in range(30)]
            for g in groups:
                r = await st.reserve_many([(f"{g}a", DAY, 60), (f"{g}b", DAY, 30)], group=g)
                assert [x.ok for x in r] == [True, True]
                assert await st.settle_many([(r[0].reservation, 50), (r[1].reservation, 0)])\
                    == [True, True]
                r2 = await st.reserve_many([(f"{g}a", DAY, 60)], group=g)
                assert not r2[0].ok
                assert [round(s.remaining) for s in r2[0].windows] == [50]
            # (budget keys are unique per group in real use: the floors are kept per key)
            # point group g0's slot at the wrong master: MOVED reloads the map, once
            runner = st._runner
            kb, _ = st.keys_of("g0a", "g0")
            from redis.crc import key_slot
            slot = key_slot(kb.encode())
            owner = runner._slots[slot]
            runner._slots[slot] = next(m for m in runner.masters if m != owner)
            r3 = await st.reserve_many([("g0a", DAY, 50)], group="g0")
            assert r3[0].ok and runner._slots[slot] == owner
            assert st.breaker.closed
        finally:
            await st.close()
    asyncio.run(go())
    held = cluster.masters_holding(f"hgu:v{LAYOUT_VERSION}:*")
    assert len(held) == 3 and all(n >= 2 for n in held.values()), held
    assert sum(held.values()) >= 60  # 30 groups x 2 bucket hashes (+ hold indexes)


def test_two_replicas_share_one_budget_on_the_cluster(replicas, cluster):
    """40 concurrent requests of 10 output tokens for one account across two replicas on a
    budget of 100 per day: exactly 10 answered, 30 refused, 100 tokens charged."""
    k = key()
    out = _burst(replicas, k, "c-conc", 10)
    rows = _wait_lines(replicas, "c-conc", 40)
    degraded = [r for r in rows if r.get("state_degraded")]
    assert not degraded, [p.stderr()[-2000:] for p in replicas]  # the cause, if it happens
    assert sorted(out) == [200] * 10 + [429] * 30
    assert sum(r["budget"][0]["charged"] for r in rows) == 100
    assert sum(r["output_tokens"] or 0 for r in rows if r["status"] == 200) == 100
    for i in range(6):  # more accounts: their budget keys land on more than one master
        msg(ant(replicas[i % 2], key()), "c-spread", 1)
    held = cluster.masters_holding(f"hgc:v{LAYOUT_VERSION}:*")
    assert sum(1 for n in held.values() if n > 0) >= 2, held


def test_replicas_share_hydra_linking_on_the_cluster(replicas):
    """As tests/test_e2e_budgets.py::test_replicas_share_hydra_linking, on the cluster."""
    a, b = replicas
    tag = uuid.uuid4().hex[:8]
    outcomes = []
    for i in range(8):
        c = ant((a, b)[i % 2], f"sk-hydra-{tag}-{i}", ip="198.51.100.72")
        try:
            msg(c, "hydra-c", 20)
            outcomes.append(200)
        except anthropic.RateLimitError:
            outcomes.append(429)
    rows = sorted(_wait_lines(replicas, "hydra-c", 8), key=lambda r: r["ts"])
    clusters = [r["cluster"] for r in rows]
    assert outcomes == [200] * 6 + [429] * 2
    assert [c == clusters[0] for c in clusters] == [True, False] + [True] * 6
    assert clusters[0].startswith("linked:cluster=h-")
    assert [r["link"]["members"] for r in rows[2:]] == [3, 4, 5, 6, 7, 8]
    charged = [r["budget"][0]["charged"] for r in rows]
    assert charged == [20] * 6 + [0, 0]


def test_cluster_setting_is_checked(tmp_path):
    """`cluster: true` needs the redis backend and a TCP URL (file:line:col)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\n"
                   "state: {backend: memory, cluster: true}\n"
                   "clusters: [{id: acct, key: [account]}]\n"
                   "budgets: [{id: b, windows: [{per: minute, tokens: 100}]}]\n")
    out = subprocess.run([sys.executable, "-m", "hydraguard", "check", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == (
        f"{bad}:2:26: state.cluster: needs backend: redis")
    bad.write_text(bad.read_text().replace(
        "backend: memory", "backend: redis, redis_url: 'unix:///tmp/r.sock'"))
    out = subprocess.run([sys.executable, "-m", "hydraguard", "check", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == (
        f"{bad}:2:25: state.redis_url: 'unix:///tmp/r.sock': a Redis Cluster is reached "
        "over redis:// or rediss://")


def test_single_node_is_refused_as_cluster():
    """A seed that is not a cluster node: the backend reports Redis unavailable (the
    on_error answer), it does not guess."""
    from .redis_util import require_redis

    url = require_redis()

    async def go():
        st = RedisBudgetState(url, prefix="hgx", cluster=True, timeout_ms=500)
        try:
            r = await st.reserve_many([("k", DAY, 10)], group="g")
            assert r[0].ok and r[0].degraded
        finally:
            await st.close()
    asyncio.run(go())


@pytest.mark.parametrize("seed", [1, 2])
def test_split_linking_matches_memory_and_spreads(cluster, seed):
    """On the cluster the evidence sets have slots of their own (clusters/link_shards.py):
    sequentially (two replicas alternating) the same clusters, sizes and why-records as the
    in-memory linker, and the link keys land on more than one master."""
    from hydraguard.clusters import ClusterLinker
    from hydraguard.clusters.redis_links import RedisLinks

    from .redis_util import FakeClock
    from .test_budgets_redis_links import CONFIG, _sequence

    clock = FakeClock(1_000_200.0)
    prefix = f"hgl{seed}{uuid.uuid4().hex[:6]}"

    async def go():
        states = [RedisBudgetState(cluster.url, prefix=prefix, clock=clock, cluster=True)
                  for _ in range(2)]
        links = [RedisLinks(s, "acct", CONFIG) for s in states]
        assert all(x.spread for x in links)
        mem_clock = FakeClock(clock.t)
        mem = ClusterLinker(config=CONFIG, clock=mem_clock)
        t0 = clock.t
        try:
            for n, (t, acct, ev, fl) in enumerate(_sequence(seed)):
                clock.t = mem_clock.t = t0 + t
                mem.observe(acct, ev, flagged=fl)
                r = links[n % 2]
                assert await r.cluster_of(acct, ev, flagged=fl) == mem.cluster_of(acct), n
                assert r.link_info(acct) == mem.link_info(acct), (n, acct)
            assert mem.cluster_size("h0") == 40
        finally:
            for s in states:
                await s.close()
    asyncio.run(go())
    held = cluster.masters_holding(f"{prefix}:v{LAYOUT_VERSION}:{{links:acct:e:*")
    assert sum(1 for n in held.values() if n > 0) >= 2, held
