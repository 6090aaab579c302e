"""Hydra linking sharded over a real 3-master Redis Cluster (clusters/link_shards.py): the
same answers as the one script on a single Redis, the keys of one definition on more than one
master, racing unions from two replicas ending with one root and exact sizes, and the admin
view reading the sharded layout."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
import redis
from redis.crc import key_slot

from hydraguard.budgets.redis_state import LAYOUT_VERSION, RedisBudgetState
from hydraguard.clusters import cluster_id as _cid
from hydraguard.clusters.link_script import PARENT, SIZES
from hydraguard.clusters.redis_links import RedisLinks
from hydraguard.clusters.shard_links import SHARDS

from .redis_cluster_util import running_cluster
from .redis_util import REDIS_URL, FakeClock, require_redis
from .test_budgets_redis_links import CONFIG, _hydra, _sequence


@pytest.fixture(scope="module")
def cluster():
    with running_cluster() as c:
        yield c


def _node_of(cluster, key: str) -> str:
    """The URL of the master that serves ``key``'s slot (CLUSTER KEYSLOT / CLUSTER SLOTS)."""
    c = redis.Redis.from_url(cluster.url)
    try:
        slot = c.execute_command("CLUSTER KEYSLOT", key)
        assert slot == key_slot(key.encode())
        for start, end, (host, port, *_), *_r in c.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return f"redis://{host.decode() if isinstance(host, bytes) else host}:{port}"
    finally:
        c.close()
    raise AssertionError(f"slot of {key} unserved")


@pytest.mark.parametrize("seed", [1, 2])
async def test_sharded_linking_answers_as_the_one_script(cluster, seed):
    """The scripted day of test_budgets_redis_links, request by request: two replicas on the
    cluster (alternating) and one on a single Redis (the one script) give the same cluster
    ids, sizes and why-records; the admin views agree; the keys of the definition are on
    several shards and masters and all carry TTLs."""
    single = require_redis(REDIS_URL)
    clock = FakeClock(1_000_200.0)
    prefix = f"hgs{seed}{uuid.uuid4().hex[:6]}"
    states = [RedisBudgetState(cluster.url, prefix=prefix, clock=clock, cluster=True)
              for _ in range(2)]
    one = RedisBudgetState(single, prefix=prefix, clock=clock)
    sharded = [RedisLinks(s, "acct", CONFIG) for s in states]
    script = RedisLinks(one, "acct", CONFIG)
    t0 = clock.t
    try:
        for n, (t, acct, ev, fl) in enumerate(_sequence(seed)):
            clock.t = t0 + t
            want = await script.cluster_of(acct, ev, flagged=fl)
            r = sharded[n % 2]
            assert await r.cluster_of(acct, ev, flagged=fl) == want, (n, acct)
            assert r._last[acct] == script._last[acct], (n, acct)
        assert script._last["h39"][1] == 40  # the hydra: 40 accounts in one cluster
        views = [x.view() for x in (script, *sharded)]
        tops = [await v.top() for v in views]
        assert tops[1] == tops[0] and tops[2] == tops[0] and len(tops[0]) == 1
        assert tops[0][0].members[0] == "h0" and len(tops[0][0].members) == 40
        for acct in ("h0", "h17", "o1", "s0"):
            whys = [await v.why(acct) for v in views]
            assert whys[1] == whys[0] and whys[2] == whys[0], acct
        assert (await views[2].why("h17")).link["members"] == 40
    finally:
        for s in (*states, one):
            await s.close()
        c = redis.Redis.from_url(single)
        for k in c.scan_iter(f"{prefix}:*"):
            c.delete(k)
        c.close()
    base = f"{prefix}:v{LAYOUT_VERSION}:{{links:acct:"
    held = cluster.masters_holding(base + "[0-9]*")  # the sharded structures
    assert sum(1 for n in held.values() if n > 0) >= 2, held
    keys = []
    for node in cluster.nodes:
        c = redis.Redis.from_url(node)
        try:
            mine = [k.decode() for k in c.scan_iter(match=base + "*", count=1000)]
            assert all(c.pttl(k) > 0 for k in mine)
            keys += [(k, node) for k in mine]
        finally:
            c.close()
    tags = {k[len(base):].split("}")[0] for k, _ in keys if not k.startswith(base + "e:")}
    assert len(tags) >= 8 and tags <= {str(s) for s in range(SHARDS)}, tags
    for k, node in keys[:20]:  # each key lives on the master of its slot
        assert _node_of(cluster, k) == node


async def test_racing_unions_end_with_one_root(cluster):
    """Two replicas (own connections) unite 30 accounts at once, in random order, along a
    chain and random extra pairs: one root (the first seen), every size exact, no cycle."""
    clock = FakeClock(1_000_200.0)
    prefix = f"hgr{uuid.uuid4().hex[:6]}"
    states = [RedisBudgetState(cluster.url, prefix=prefix, clock=clock, cluster=True)
              for _ in range(2)]
    links = [RedisLinks(s, "acct", CONFIG) for s in states]
    accts = [f"r{i}" for i in range(30)]
    try:
        for a in accts:  # first seen one second apart
            clock.advance(1)
            assert await links[0].cluster_of(a, {}) is not None
        sh = [x._sharded for x in links]
        e, period, now = links[0].epoch_of(clock.t), links[0].period_of(clock.t), clock.t
        rng = random.Random(7)
        pairs = [(accts[i], accts[i + 1]) for i in range(29)]
        pairs += [tuple(rng.sample(accts, 2)) for _ in range(30)]
        rng.shuffle(pairs)
        for round_ in range(2):  # the second round: nothing left to unite
            got = await asyncio.gather(*(sh[i % 2].union(e, a, b, period, now)
                                         for i, (a, b) in enumerate(pairs)))
            made = [x for x in got if x is not None]
            assert len(made) == (29 if round_ == 0 else 0)
            assert len({lose for _w, lose in made}) == len(made)
        roots = await sh[1].roots(e, accts, period)
        assert {r for r, _s, _f in roots.values()} == {"r0"}
        assert roots["r0"][1] == 30 and roots["r29"][1] == 30
        c = redis.Redis.from_url(cluster.url)
        sizes = {}
        for s in range(SHARDS):  # only the root has a size
            k = links[0].key(SIZES, e, shard=s)
            node = redis.Redis.from_url(_node_of(cluster, k))
            sizes.update({a.decode(): int(v) for a, v in node.hgetall(k).items()})
            node.close()
        c.close()
        assert sizes == {"r0": 30}
    finally:
        for s in states:
            await s.close()


async def test_racing_requests_keep_sizes_exact(cluster):
    """The hydra's requests from two replicas all at once: whatever links the race makes, the
    union-find has no cycle and every root's size is the number of its members."""
    clock = FakeClock(1_000_200.0)
    prefix = f"hgq{uuid.uuid4().hex[:6]}"
    states = [RedisBudgetState(cluster.url, prefix=prefix, clock=clock, cluster=True)
              for _ in range(2)]
    links = [RedisLinks(s, "acct", CONFIG) for s in states]
    try:
        for wave in range(3):
            clock.advance(1)
            await asyncio.gather(*(
                links[i % 2].cluster_of(f"q{i}", _hydra(i + wave)[0], flagged=True)
                for i in range(24)))
        lk = links[0]
        e = lk.epoch_of(clock.t)
        parent: dict[str, str] = {}
        for s in range(SHARDS):
            k = lk.key(PARENT, e, shard=s)
            node = redis.Redis.from_url(_node_of(cluster, k))
            parent.update({a.decode(): p.decode() for a, p in node.hgetall(k).items()})
            node.close()
        assert parent, "nothing linked"
        members: dict[str, list[str]] = {}
        for x in {*parent, *parent.values()}:
            y, hops = x, 0
            while parent.get(y, y) != y:
                y, hops = parent[y], hops + 1
                assert hops < 64
            members.setdefault(y, []).append(x)
        got = await lk._sharded.roots(e, list(members), lk.period_of(clock.t))
        assert {r: got[r][1] for r in members} == {r: len(m) for r, m in members.items()}
    finally:
        for s in states:
            await s.close()


async def test_a_cycle_stops_at_the_hop_limit(cluster):
    """Parent pointers in a cycle (cannot happen while first-seen times hold; written by
    hand here): a find stops after HOPS levels, a union and a request still finish."""
    clock = FakeClock(1_000_200.0)
    prefix = f"hgy{uuid.uuid4().hex[:6]}"
    state = RedisBudgetState(cluster.url, prefix=prefix, clock=clock, cluster=True)
    links = RedisLinks(state, "acct", CONFIG)
    try:
        e, period = links.epoch_of(clock.t), links.period_of(clock.t)
        for x, p in (("y1", "y2"), ("y2", "y1")):
            k = links.key(PARENT, e, shard=links.shard_of(x))
            node = redis.Redis.from_url(_node_of(cluster, k))
            node.hset(k, x, p)
            node.close()
        sh = links._sharded
        got = await sh.roots(e, ["y1", "y3"], period)
        assert got["y3"] == ("y3", 1, None) and got["y1"][0] in ("y1", "y2")
        assert got["y1"][1:] == (1, None)
        # y3 (a root) goes under y1; y1's size can find no root (given up after TRIES)
        assert await sh.union(e, "y1", "y3", period, clock.t) == ("y1", "y3")
        assert (await sh.roots(e, ["y3"], period))["y3"][0] in ("y1", "y2")
        assert await links.cluster_of("y3", {}) in (_cid("y1"), _cid("y2"))
    finally:
        await state.close()
