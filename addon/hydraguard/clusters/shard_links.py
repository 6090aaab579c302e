"""One request of shared hydra linking on a Redis Cluster: the steps of clusters/link_shards.py
(where the layout and the atomicity given up are described), driven from Python.

The decisions between the steps are ``link_script.BODY``'s, line for line and with the same
floating-point arithmetic (candidates, ranking, which pairs are credited, where a link is
made), so on a sequence of requests one at a time the answers (cluster ids, sizes,
why-records) are the one script's. Every call goes through the state's ``call`` (timeout,
breaker: a failure raises ``StateUnavailable`` to `RedisLinks.cluster_of`).
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING

from ..policy.budget_model import LinkRule
from .link_script import FIRST, PAIRS, PARENT, PARTNERS, SIZES, WHY
from .link_script import reply_text as _t
from .link_shards import ACCOUNT, CREDIT, EVIDENCE_STEP, GROW, HOP, PARTNERS_ADD, UNITE, WHY_ADD

if TYPE_CHECKING:
    from .redis_links import RedisLinks

__all__ = ["HOPS", "SHARDS", "TRIES", "ShardedLinking", "shard_of"]

SHARDS = 32  # shards of a definition's per-account structures (hash tags; key layout 5)
HOPS = 64  # tree levels a find follows at most (cycle guard)
TRIES = 8  # compare-and-set attempts of one union (then: the link is made next time)
NETWORK = frozenset({"ip", "prefix", "asn"})

# (kind, digest, rule) of one evidence value of a request
Value = tuple[str, str, LinkRule]


def shard_of(account: str) -> int:
    """The shard of an account's structures (and of the pairs it is the smaller of)."""
    h = blake2b(account.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(h, "big") % SHARDS


class ShardedLinking:
    """The sharded steps for one `RedisLinks` (its keys, rules and state)."""

    def __init__(self, links: RedisLinks) -> None:
        self.links = links
        reg = links.state.register
        self._account, self._evidence, self._hop = reg(ACCOUNT), reg(EVIDENCE_STEP), reg(HOP)
        self._unite, self._grow, self._credit = reg(UNITE), reg(GROW), reg(CREDIT)
        self._partners_add, self._why_add = reg(PARTNERS_ADD), reg(WHY_ADD)
        c = links.config
        self.threshold, self.multi_s = float(c.threshold), float(c.multi_exit_s)
        self.k = int(c.candidates)
        self._pairs_cap = str(math.ceil(c.max_pairs / SHARDS))
        self._why_cap = str(math.ceil(c.max_why / SHARDS))
        self._max_partners = str(c.max_partners)
        self._ttl = str(math.ceil(links.window_s * 1000) * 2)

    def _k(self, part: str, n: int, account: str) -> str:
        """The key of ``part`` of epoch/period ``n`` on ``account``'s shard."""
        return self.links.key(part, n, shard=shard_of(account))

    # -- union-find across shards -------------------------------------------------------
    async def roots(self, epoch: int, nodes: Sequence[str], period: int, what: int = 3
                    ) -> dict[str, tuple[str, int, float | None]]:
        """node -> (root, root's size, root's first seen) in the union-find of ``epoch``:
        level by level, one HOP per shard and level (concurrently). ``what``: 1 reads the
        roots only (size 1, first seen None), 2 also sizes, 3 also first seen."""
        call, key = self.links.state.call, self.links.key
        up = {x: x for x in nodes}
        todo, out = list(up), {}
        for _ in range(HOPS):
            if not todo:
                break
            by: dict[int, dict[str, None]] = defaultdict(dict)
            for x in todo:
                by[shard_of(up[x])][up[x]] = None
            asks = [(s, list(xs)) for s, xs in by.items()]
            got = await asyncio.gather(*(
                call(self._hop, [key(PARENT, epoch, shard=s), key(SIZES, epoch, shard=s),
                                 key(FIRST, period, shard=s), key(FIRST, period - 1, shard=s)],
                     [str(what), *xs]) for s, xs in asks))
            info = {}
            for (_s, xs), rep in zip(asks, got, strict=True):
                for j, x in enumerate(xs):
                    info[x] = (_t(rep[3 * j]), _t(rep[3 * j + 1]), _t(rep[3 * j + 2]))
            again = []
            for x in todo:
                pos = up[x]
                p, size, first = info[pos]
                if p and p != pos:
                    up[x] = p
                    again.append(x)
                else:
                    out[x] = (pos, int(float(size or 1)), float(first) if first else None)
            todo = again
        for x in todo:  # HOPS levels: a cycle (first-seen times changed): stop here
            out[x] = (up[x], 1, None)
        return out

    async def union(self, epoch: int, a: str, b: str, period: int, now: float
                    ) -> tuple[str, str] | None:
        """Unite a and b in the union-find of ``epoch``: (winner, loser) roots, or None
        (one root already, or ``TRIES`` compare-and-sets lost)."""
        call, k = self.links.state.call, self._k
        for _ in range(TRIES):
            r = await self.roots(epoch, [a, b], period)
            (ra, _, fa), (rb, _, fb) = r[a], r[b]
            if ra == rb:
                return None
            sa, sb = (now if fa is None else fa), (now if fb is None else fb)
            if (sb, rb) < (sa, ra):
                ra, rb = rb, ra
            n = int(await call(self._unite, [k(PARENT, epoch, rb), k(SIZES, epoch, rb)],
                               [rb, ra, self._ttl]))
            if n < 0:
                continue  # rb is no longer a root: find again
            x = ra
            for _ in range(TRIES):  # the size goes to the root of the winner
                p = _t(await call(self._grow, [k(PARENT, epoch, x), k(SIZES, epoch, x)],
                                  [x, str(n), self._ttl]))
                if not p:
                    break
                x = (await self.roots(epoch, [p], period, what=1))[p][0]
            return ra, rb
        return None

    # -- one request ----------------------------------------------------------------------
    async def cluster_of(self, acct: str, values: list[Value], flagged: bool, now: float
                         ) -> tuple[str, int, str]:
        """(root, cluster size, why-record or '') of ``acct`` after recording its evidence
        (link_script.BODY's steps; see module doc)."""
        links, call, k = self.links, self.links.state.call, self._k
        e, period, w = links.epoch_of(now), links.period_of(now), links.window_s
        nows = repr(float(now))
        got = await call(self._account, [
            k(FIRST, period, acct), k(FIRST, period - 1, acct), k(PARTNERS, e, acct),
            k(PARTNERS, e - 1, acct), k(PARENT, e, acct), k(SIZES, e, acct), k(WHY, e, acct)],
            [acct, nows, links.first_ms])
        raw_partners, parent, size, why = (_t(x) for x in got)
        partners = [p for p in raw_partners.split("\t") if p]
        fixed = [nows, repr(w), acct, repr(e * w), str(self.k), "1" if flagged else "0"]
        evs = await asyncio.gather(*(
            call(self._evidence, [links.evidence_key(kind, d)],
                 [*fixed, str(rule.max_accounts), *partners]) for kind, d, rule in values))
        scored = []
        for (kind, d, rule), raw in zip(values, evs, strict=True):
            b = [_t(x) for x in raw]
            n = int(float(b[1]))
            if b[0] == "1" or not rule.min_accounts <= n <= rule.max_accounts:
                continue
            r = math.log10(rule.max_accounts / n)
            if r > 0:
                r = min(r, 1.0)
                t = int(float(b[2]))
                top = [b[3 + 2 * j] for j in range(t)]
                sc = {b[3 + 2 * j]: b[4 + 2 * j] for j in range((len(b) - 3) // 2)}
                scored.append((kind, f"{kind}:{d}", float(rule.flagged_weight) * r,
                               float(rule.weight) * r, kind in NETWORK, top, sc))
        made = await self._score(acct, scored, partners, flagged, now) if scored else None
        if made is not None:  # links were made: read the answer again
            root, rsize, _f = (await self.roots(e, [acct], period, what=2))[acct]
            return root, rsize, made
        if parent and parent != acct:
            root, rsize, _f = (await self.roots(e, [parent], period, what=2))[parent]
            return root, rsize, why
        return acct, int(float(size or 1)), why

    async def _score(self, acct: str, scored: list, partners: list[str], flagged: bool,
                     now: float) -> str | None:
        """Candidates, ranking, pair credits and unions (link_script.BODY, steps 2-4); the
        account's why-record when links were made, else None."""
        links, call, k, kk = self.links, self.links.state.call, self._k, self.k
        e, period = links.epoch_of(now), links.period_of(now)
        pool: dict[str, None] = {}
        for v in scored:
            got = 0
            for m in v[5]:
                c = m[:-2]
                if c != acct:
                    pool[c] = None
                    got += 1
                    if got == kk:
                        break
        for p in partners:
            pool[p] = None
        roots = await self.roots(e + 1, [*pool, acct], period, what=1)
        alias: dict[str, str] = {}

        def root_next(x: str) -> str:
            r = roots[x][0]
            while r in alias:
                r = alias[r]
            return r

        me = root_next(acct)
        ranked = []
        for i, c in enumerate(c for c in pool if root_next(c) != me):
            credits, pot, net = [], 0.0, False
            for kind, vid, wf, wu, network, _top, sc in scored:
                t1, t0 = sc.get(c + "\t1"), sc.get(c + "\t0")
                if (t1 or t0) and not (network and net):
                    net = net or network
                    both = flagged and t1 is not None
                    wt = wf if both else wu
                    pot += wt
                    burst = now - float(t1 or t0) <= self.multi_s
                    credits += [kind, vid, repr(wt), "1" if burst else "0", "1" if both else "0"]
            if credits:
                ranked.append((-pot, i, c, credits))
        ranked.sort(key=lambda x: (x[0], x[1]))
        left, fixed = kk, [repr(float(now)), repr(links.window_s), repr(self.multi_s),
                           self._pairs_cap]
        adds: list[tuple[str, str]] = []
        whys: list[tuple[str, str]] = []
        # credited in batches of candidates with distinct roots, concurrently: a link made
        # in a batch cannot make another member of it already linked, so the same pairs are
        # credited as one by one (BODY's order), in fewer round trips
        i = 0
        while i < len(ranked) and left > 0:
            batch: list[tuple[str, list[str]]] = []
            seen: set[str] = set()
            while i < len(ranked) and len(batch) < left:
                c, credits = ranked[i][2], ranked[i][3]
                r = root_next(c)
                if r in seen:
                    break  # after this batch: it may be linked by then
                i += 1
                if r != me:
                    seen.add(r)
                    batch.append((c, credits))
            left -= len(batch)
            got = await asyncio.gather(*(call(
                self._credit, [k(PAIRS, e, min(acct, c)), k(PAIRS, e - 1, min(acct, c))],
                [*fixed, f"{min(acct, c)}\t{max(acct, c)}", *credits]) for c, credits in batch))
            for (c, _credits), raw in zip(batch, got, strict=True):
                res = [_t(x) for x in raw]
                if not res[0]:
                    continue  # a new pair over the shard's cap
                if res[3] == "1":
                    adds += [(acct, c), (c, acct)]
                if float(res[0]) >= self.threshold - 1e-9:
                    tail = f"\t{res[0]}\t{res[1]}\t{res[2]}\t{now:.17g}"
                    whys += [(acct, c + tail), (c, acct + tail)]
                    _cur, nxt = await asyncio.gather(self.union(e, acct, c, period, now),
                                                     self.union(e + 1, acct, c, period, now))
                    if nxt is not None:
                        alias[nxt[1]] = nxt[0]
                    me = root_next(acct)
        key, mine_s = links.key, shard_of(acct)
        steps = [call(self._partners_add,
                      [key(PARTNERS, e, shard=s), key(PARTNERS, e - 1, shard=s)],
                      [self._max_partners, self._ttl, *ys]) for s, ys in _by_shard(adds).items()]
        mine = None
        for s, ys in _by_shard(whys).items():
            if s == mine_s:
                mine = len(steps)
            steps.append(call(self._why_add, [key(WHY, e, shard=s), key(WHY, e + 1, shard=s)],
                              [self._why_cap, self._ttl, acct, *ys]))
        got = await asyncio.gather(*steps)
        return None if mine is None else _t(got[mine])


def _by_shard(items: list[tuple[str, str]]) -> dict[int, list[str]]:
    """shard -> the flattened (account, value) items of its accounts, in order."""
    out: dict[int, list[str]] = {}
    for x, y in items:
        out.setdefault(shard_of(x), []).extend((x, y))
    return out
