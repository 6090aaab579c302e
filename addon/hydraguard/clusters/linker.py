"""Hydra linking in one process (pure logic, no I/O).

``ClusterLinker`` links accounts whose *combined* shared evidence crosses a threshold, with a
union-find over accounts.

Evidence and pair scores
------------------------
A request brings evidence values by kind: its exit (``ip``; an IPv6 address as its /64),
``prefix`` (/24), ``asn``, ``tls_ua`` (JA4 + User-Agent), ``template`` (prompt template id),
and whether its network is *flagged* (residential proxy, hosting, VPN, Tor, listed, ...).
For every value the linker keeps the accounts seen with it in the window (last time, flag).
A request whose values are all known to the account in the current epoch (see below) costs
a few dict updates. A value new to it, with ``min_accounts`` <= n <= ``max_accounts``
accounts, is *scored*: the candidates are the ``candidates`` most recent other accounts of
each scored value and the account's earlier partners; those already in its cluster are
dropped; the others are ranked by what they share (every scored value, the most specific
network value only: an exit, its /24 and its ASN describe one place), each value worth its
weight (clusters/scoring.py: flagged weight when both came through flagged networks, times
rarity), and the ``candidates`` strongest are credited, strongest first, so the first link
usually makes the rest already-linked. When a pair
score reaches ``threshold`` the two accounts are united. One shared value never links
(weights stay below the threshold): an office NAT, a SaaS's cloud IPs, a popular tool's
template or a proxy exit's neighbours alone link nobody; a flagged exit plus a template, or
two exits used within minutes of each other, do.

Epochs
------
Time is cut into epochs of one window. Links made during epoch e are written into the
union-find answering in e *and* into the one that will answer in e+1, so a link lasts at least
one window and at most two after the evidence that made it; an account seen again in a new
epoch is scored again (its values count as new), which renews its links while the evidence
is fresh. Pair scores live for the current and the previous epoch (parts older than the window
are forgotten). The Redis store (redis_links.py) keeps the same structures in Redis with the
same arithmetic, so both give the same clusters on the same sequence (ties in time aside).

Stable ids
----------
``cluster_of(account)`` is ``"h-" + hash(root)``; the root of a cluster is its member seen
first (ties by name), so the id does not change as accounts join and is the same after an
epoch change while the cluster holds.

Bounds
------
``max_nodes`` accounts (LRU), ``2 * max_nodes`` evidence values (LRU) of at most
``max_accounts + 1`` accounts each, ``max_pairs`` pair scores (LRU) per epoch and
``max_partners`` partners per account (a partner list only for accounts with a pair),
``max_why`` why-records (linked accounts only) per union-find. A union-find that grows past
``2 * max_nodes`` entries is started afresh.

Memory (bench/bench_memory.py): an evidence value is keyed by its ``kind:value`` string; seen
with one account (most exits) it holds that account inline, from the second on an LRU map of
last-seen times (a tuple only for a sighting through a flagged network); a pair score is one
list (clusters/scoring.py). About 1.1 KB per tracked account plus ~0.35 KB per pair score.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from ..policy.budget_model import LinkConfig, LinkRule  # rules data; re-exported here
from .keys import cluster_id
from .link_state import Members as _Members
from .link_state import Seen as _Seen
from .link_state import UnionFind as _UnionFind
from .link_state import held as _held
from .link_state import unpack as _unpack
from .scoring import EPS, KINDS, NETWORK, Pair, Why, link_info

__all__ = ["DEFAULT_LINK_RULES", "ClusterLinker", "LinkRule"]

DEFAULT_LINK_RULES: tuple[LinkRule, ...] = tuple(LinkRule(k) for k in KINDS)

class ClusterLinker:
    """Union-find of accounts linked by combined shared evidence (see module doc)."""

    def __init__(
        self,
        window_s: float = 3600.0,
        max_nodes: int = 100_000,
        link_rules: Iterable[LinkRule] = DEFAULT_LINK_RULES,
        clock: Callable[[], float] = time.monotonic,
        *,
        config: LinkConfig | None = None,
        max_evidence: int | None = None,
    ) -> None:
        cfg = config or LinkConfig(float(window_s), int(max_nodes), tuple(link_rules))
        if cfg.window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.config = cfg
        self.window_s = float(cfg.window_s)
        self.max_nodes = int(cfg.max_nodes)
        self.rules: dict[str, LinkRule] = {r.kind: r for r in cfg.rules}
        self._order = tuple(k for k in KINDS if k in self.rules)
        self._clock = clock
        self.max_evidence = int(max_evidence or 2 * self.max_nodes)
        # LRU maps (oldest first): account -> first seen; "kind:value" -> its members (see
        # _Members: one account inline, more in an LRU map account -> last seen [, flagged])
        self._nodes: OrderedDict[str, float] = OrderedDict()
        self._values: OrderedDict[str, _Members] = OrderedDict()
        self.epoch: int | None = None
        self._uf = _UnionFind()    # answers in the current epoch
        self._next = _UnionFind()  # will answer in the next one (links made from now on)
        self._pairs: OrderedDict[tuple[str, str], Pair] = OrderedDict()
        self._pairs_prev: dict[tuple[str, str], Pair] = {}
        self._partners: OrderedDict[str, list[str]] = OrderedDict()
        self._partners_prev: dict[str, list[str]] = {}
        self.epochs = 0
        self.links = 0
        self._held = 0  # accounts held by all evidence values together

    # -- epochs and union-find -------------------------------------------------------------
    def _epoch(self, now: float) -> None:
        e = math.floor(now / self.window_s)
        if e == self.epoch:
            return
        if self.epoch is not None and e == self.epoch + 1:
            self._uf, self._next = self._next, _UnionFind()
            self._pairs_prev, self._partners_prev = self._pairs, self._partners
        else:
            self._uf, self._next = _UnionFind(), _UnionFind()
            self._pairs_prev, self._partners_prev = {}, {}
        self._pairs, self._partners = OrderedDict(), OrderedDict()
        self.epoch = e
        self.epochs += 1

    def _union(self, uf: _UnionFind, a: str, b: str, why: Why, why_b: Why, now: float) -> None:
        ra, rb = uf.find(a), uf.find(b)
        if ra != rb:
            nodes = self._nodes
            if (nodes.get(rb, now), rb) < (nodes.get(ra, now), ra):
                ra, rb = rb, ra
            parent, size = uf.parent, uf.size
            parent.setdefault(ra, ra)
            parent[rb] = ra
            sa, sb = size.get(ra, 1), size.pop(rb, 1)
            size[ra] = sa + sb
            uf.clusters += 1 - (sa > 1) - (sb > 1)
        w = uf.why
        for x, rec in ((a, why), (b, why_b)):
            if x not in w:
                w[x] = rec
                if len(w) > self.config.max_why:
                    w.popitem(last=False)

    def _partners_of(self, a: str, create: bool = True) -> list[str]:
        """The partners of ``a`` in this epoch (those of the previous one carried over);
        ``create=False``: only read, no entry for an account without partners."""
        partners = self._partners
        got = partners.get(a)
        if got is None:
            prev = self._partners_prev.get(a)
            if prev is None and not create:
                return []
            got = partners[a] = list(prev or ())
            if len(partners) > self.max_nodes:
                partners.popitem(last=False)
        return got

    def _pair(self, a: str, b: str) -> Pair:
        """The pair score of a and b (moved into this epoch's store; a new pair makes each
        the other's partner)."""
        key = (a, b) if a < b else (b, a)
        pairs = self._pairs
        p = pairs.get(key)
        if p is not None:
            pairs.move_to_end(key)
            return p
        p = self._pairs_prev.get(key)
        if p is None:
            p = Pair()
            cap = self.config.max_partners
            for x, y in ((a, b), (b, a)):
                lst = self._partners_of(x)
                lst.append(y)
                if len(lst) > cap:
                    del lst[0]
        pairs[key] = p
        if len(pairs) > self.config.max_pairs:
            pairs.popitem(last=False)
        return p

    # -- public API ----------------------------------------------------------------------
    def observe(self, account: str, evidence: Mapping[str, str | None],
                now: float | None = None, *, flagged: bool = False) -> None:
        """Record that ``account`` was seen with ``evidence`` (kind -> value), through a
        flagged network or not, and link it where the combined evidence says so. Kinds
        without a rule and empty values are ignored."""
        if now is None:
            now = self._clock()
        self._epoch(now)
        nodes = self._nodes
        if account in nodes:
            nodes.move_to_end(account)
        else:
            nodes[account] = now
            if len(nodes) > self.max_nodes:
                nodes.popitem(last=False)
        window, horizon = self.window_s, now - self.window_s
        epoch_start = self.epoch * window
        values = self._values
        scored = []  # the values new to the account in this epoch (see _score)
        seen: _Seen = (now, True) if flagged else now
        for kind in self._order:
            value = evidence.get(kind)
            if not value:
                continue
            vid = f"{kind}:{value}"
            members = values.get(vid)
            if members is None:
                values[vid] = (account, seen)
                if len(values) > self.max_evidence:
                    self._held -= _held(values.popitem(last=False)[1])
                self._held += 1
                continue  # one account: below every min_accounts (>= 2)
            values.move_to_end(vid)
            if members.__class__ is tuple:
                first, fseen = members  # type: ignore[misc]
                if first == account or _unpack(fseen)[0] < horizon:
                    values[vid] = (account, seen)  # still one account
                    continue
                members = values[vid] = OrderedDict(((first, fseen), (account, seen)))
                self._held += 1
                prev = None
            else:
                prev = members.get(account)
                members[account] = seen
                members.move_to_end(account)
                cap = self.rules[kind].max_accounts + 1
                held = len(members)
                while len(members) > cap or _unpack(next(iter(members.values())))[0] < horizon:
                    members.popitem(last=False)
                self._held += len(members) - held + (prev is None)
                if prev is not None and _unpack(prev)[0] >= epoch_start:
                    continue  # scored in this epoch already
            rule = self.rules[kind]
            n = len(members)
            if n < rule.min_accounts or n > rule.max_accounts:
                continue
            r = math.log10(rule.max_accounts / n)
            if r > 0:
                r = 1.0 if r > 1.0 else r
                scored.append((kind, vid, members, rule.flagged_weight * r,
                               rule.weight * r, kind in NETWORK))
        if scored:
            self._score(account, scored, now, flagged)
        if len(self._uf.parent) > 2 * self.max_nodes:  # safety valve: start afresh
            self._uf, self._next = self._next, _UnionFind()
            if len(self._uf.parent) > 2 * self.max_nodes:
                self._uf = _UnionFind()

    def _score(self, account: str, scored: list, now: float, flagged: bool) -> None:
        """Credit the pairs of ``account`` with the candidates of its newly scored values,
        strongest candidate first, and link where a pair reaches the threshold. ``scored``:
        (kind, "kind:value", members, weight if both flagged, weight otherwise, network?)."""
        cfg = self.config
        window, multi_s = self.window_s, cfg.multi_exit_s
        k = cfg.candidates
        pool: dict[str, None] = {}  # candidates in order of first appearance
        for v in scored:
            got = 0
            for c in reversed(v[2]):
                if c != account:
                    pool[c] = None
                    got += 1
                    if got == k:
                        break
        for p in self._partners_of(account, create=False):
            pool[p] = None
        nxt = self._next
        me = nxt.find(account)
        ranked = []
        for i, c in enumerate(pool):
            if nxt.find(c) == me:
                continue  # linked already
            credits = []
            pot = 0.0
            net = False
            for kind, vid, members, wf, wu, network in scored:
                m = members.get(c)
                if m is None or (network and net):
                    continue  # not shared, or a less specific network value
                net = net or network
                if m.__class__ is tuple:
                    mt, both = m[0], flagged
                else:
                    mt, both = m, False
                w = wf if both else wu
                pot += w
                credits.append((kind, vid, w, now - mt <= multi_s, both))
            if credits:
                ranked.append((-pot, i, c, credits))
        ranked.sort()
        left = k  # pairs credited per request: the strongest candidates only
        for _pot, _i, c, credits in ranked:
            if nxt.find(c) == me:
                continue
            if left == 0:
                break
            left -= 1
            pair = self._pair(account, c)
            total = 0.0
            for kind, vid, w, burst, both in credits:
                if both:
                    pair.flagged = True
                total = pair.credit(kind, vid, w, burst, now, window, multi_s)
            if total >= cfg.threshold - EPS:
                counts = pair.counts(now, window)
                wa: Why = (c, total, counts, pair.flagged, now)
                wc: Why = (account, total, counts, pair.flagged, now)
                self._union(self._uf, account, c, wa, wc, now)
                self._union(nxt, account, c, wa, wc, now)
                self.links += 1
                me = nxt.find(account)

    def cluster_of(self, account: str, now: float | None = None) -> str:
        """Stable cluster id of ``account`` (``"h-"`` + 16 hex)."""
        self._epoch(self._clock() if now is None else now)
        return cluster_id(self._uf.find(account))

    def cluster_size(self, account: str, now: float | None = None) -> int:
        """Number of accounts in ``account``'s cluster (1 when unlinked)."""
        self._epoch(self._clock() if now is None else now)
        return self._uf.size.get(self._uf.find(account), 1)

    def pair_score(self, a: str, b: str, now: float | None = None) -> float:
        """The current pair score of two accounts (0 when they share nothing counted)."""
        now = self._clock() if now is None else now
        key = (a, b) if a < b else (b, a)
        p = self._pairs.get(key)
        if p is None:
            p = self._pairs_prev.get(key)
        return 0.0 if p is None else p.score(now, self.window_s)

    def why(self, account: str) -> Why | None:
        """The pair that linked ``account`` in the current union-find (None: unknown)."""
        return self._uf.why.get(account)

    def link_info(self, account: str, now: float | None = None) -> dict[str, object] | None:
        """The decision log's ``link`` object for ``account`` (None when it is not linked)."""
        now = self._clock() if now is None else now
        uf = self._uf
        size = uf.size.get(uf.find(account), 1)
        return link_info(size, uf.why.get(account), now) if size > 1 else None

    # -- read-only views (the admin listener: clusters/view.py) -------------------------
    def linked(self, now: float | None = None) -> dict[str, list[str]]:
        """The linked clusters answering now: root -> members (two or more, any order)."""
        self._epoch(self._clock() if now is None else now)
        uf, comps = self._uf, {}
        for x in list(uf.parent):
            comps.setdefault(uf.find(x), []).append(x)
        return {r: m for r, m in comps.items() if len(m) > 1}

    def largest(self, now: float | None = None) -> tuple[int, int]:
        """(linked clusters, accounts in the largest) answering now."""
        self._epoch(self._clock() if now is None else now)
        return self._uf.clusters, max(self._uf.size.values(), default=0)

    def first_seen(self, account: str) -> float | None:
        """When ``account`` was first seen (None: not, or forgotten)."""
        return self._nodes.get(account)

    def values(self, now: float | None = None) -> list[tuple[str, str, dict]]:
        """Every evidence value with the accounts seen with it in the window: (kind, value,
        {account: (last seen, flagged)})."""
        horizon = (self._clock() if now is None else now) - self.window_s
        out = []
        for vid, members in list(self._values.items()):
            items = (members,) if members.__class__ is tuple else members.items()
            live = {a: m for a, m in ((a, _unpack(m)) for a, m in items) if m[0] >= horizon}
            if live:
                kind, value = vid.split(":", 1)
                out.append((kind, value, live))
        return out

    def value_keys(self) -> list[tuple[str, str]]:
        """(kind, value) of every evidence value held (in the window or not)."""
        return [tuple(vid.split(":", 1)) for vid in self._values]  # type: ignore[misc]

    def counts(self, kind: str, n: int) -> bool:
        """Whether a value of ``kind`` seen with ``n`` accounts adds to pair scores."""
        rule = self.rules.get(kind)
        return rule is not None and rule.min_accounts <= n < rule.max_accounts

    def stats(self) -> dict[str, int]:
        """Sizes of every bounded structure (for the status file and tests; O(1))."""
        return {
            "nodes": len(self._nodes),
            "evidence": len(self._values),
            "evidence_members": self._held,
            "pairs": len(self._pairs) + len(self._pairs_prev),
            "partners": len(self._partners) + len(self._partners_prev),
            "parent": len(self._uf.parent) + len(self._next.parent),
            "clusters": self._uf.clusters,
            "why": len(self._uf.why) + len(self._next.why),
            "links": self.links,
            "epochs": self.epochs,
        }
