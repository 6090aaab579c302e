"""Hydra linking in one process (pure logic, no I/O).

``ClusterLinker`` links
accounts that share evidence (IP, network prefix, TLS fingerprint + User-Agent, prompt
template, …) into clusters with a union-find.

Linking scheme (epoch rebuild)
------------------------------
For every evidence value ``(kind, value)`` the linker keeps the accounts seen with it and
when (last time each).  A value *links* its accounts only while the number of distinct
accounts seen with it within ``window_s`` is between the rule's ``min_accounts`` and
``max_accounts``: ordinary sharing (2–3 colleagues behind one NAT) stays below
``min_accounts`` and links nobody; huge shared values (carrier-grade NAT, a popular SDK's
fingerprint) go above ``max_accounts`` and link nobody either.  Linking is transitive
across kinds (A~B by IP, B~C by template → one cluster).

New links are added incrementally on ``observe`` (amortised near O(1)).  Union-find cannot
delete edges, so links age out by rebuilding: every ``rebuild_every_s`` (default
``window_s / 4``) the whole structure is rebuilt from the evidence still inside the window.
A link therefore lives at most ``window_s + rebuild_every_s`` after its last evidence.
A rebuild costs ~1 µs per (account, evidence value) pair still inside the window (≈0.17 s
for 100k accounts each in two linked groups, on the reference VM), so the automatic one
runs in slices of about ``REBUILD_SLICE_S`` (1 ms) per ``observe`` / ``cluster_of`` call:
the current union-find keeps answering, new links go into both, and the new one is swapped
in when complete (the result is the same as a rebuild at once: roots are chosen by
first-seen time, not by order of work).  ``rebuild()`` does it all at once.  A value
that grows past ``max_accounts`` stops linking at once for new observations, but the
links it already made stay until the next rebuild.

Stable ids
----------
``cluster_of(account)`` is ``"h-" + hash(root)`` where the root is the component member
seen first (oldest first-seen, ties by name).  An unlinked account is its own root, so its
id does not change when newer accounts join it, nor across rebuilds while the component
holds.  The id of the *younger* side changes when two existing clusters merge (it takes
the older id), and a cluster's id changes if its oldest member's links expire.

Memory bounds
-------------
``max_nodes`` accounts (LRU by last observation), ``max_evidence`` evidence values (LRU),
at most ``max_accounts + 1`` accounts per evidence value, and a parent map that is rebuilt
(from the bounded structures only) when it grows past ``2 * max_nodes``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from ..policy.budget_model import LinkRule  # rules data; re-exported here
from .keys import cluster_id

__all__ = ["DEFAULT_LINK_RULES", "ClusterLinker", "LinkRule"]

REBUILD_SLICE_S = 0.001  # CPU time an automatic rebuild may take per observe / cluster_of


DEFAULT_LINK_RULES: tuple[LinkRule, ...] = (
    LinkRule("ip", min_accounts=5, max_accounts=64),
    LinkRule("prefix", min_accounts=10, max_accounts=256),
    LinkRule("tls_ua", min_accounts=20, max_accounts=200),
    LinkRule("template", min_accounts=5, max_accounts=1000),
)


class _Evidence:
    __slots__ = ("linked", "members")

    def __init__(self) -> None:
        # account -> last seen; ordered oldest -> newest observation
        self.members: OrderedDict[str, float] = OrderedDict()
        self.linked = False  # all current members already unioned


class ClusterLinker:
    """Union-find of accounts linked by shared evidence (see module doc)."""

    def __init__(
        self,
        window_s: float = 3600.0,
        max_nodes: int = 100_000,
        link_rules: Iterable[LinkRule] = DEFAULT_LINK_RULES,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_evidence: int | None = None,
        rebuild_every_s: float | None = None,
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = float(window_s)
        self.max_nodes = int(max_nodes)
        self.rules: dict[str, LinkRule] = {r.kind: r for r in link_rules}
        self._clock = clock
        self.rebuild_every_s = float(rebuild_every_s or window_s / 4)
        self.max_evidence = int(max_evidence or 2 * self.max_nodes)
        # LRU maps (oldest first): account -> first seen; (kind, value) -> _Evidence
        self._nodes: OrderedDict[str, float] = OrderedDict()
        self._evidence: OrderedDict[tuple[str, str], _Evidence] = OrderedDict()
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}
        self._last_rebuild: float | None = None
        self.rebuilds = 0
        # a rebuild in progress: the new (parent, size), evidence keys still to move in
        self._next: tuple[dict[str, str], dict[str, int]] | None = None
        self._todo: list[tuple[str, str]] = []
        self._rebuild_started = 0.0

    # -- union-find ----------------------------------------------------------------------
    @staticmethod
    def _find_in(parent: dict[str, str], x: str) -> str:
        p = parent.get(x)
        if p is None:
            return x
        while p != x:
            gp = parent.get(p, p)
            if gp != p:
                parent[x] = gp  # path halving
            x = gp
            p = parent.get(x, x)
        return x

    def _find(self, x: str) -> str:
        return self._find_in(self._parent, x)

    def _rank(self, a: str) -> tuple[float, str]:
        first = self._nodes.get(a)
        return (first if first is not None else float("inf"), a)

    def _union_in(self, parent: dict[str, str], size: dict[str, int], a: str, b: str) -> None:
        ra, rb = self._find_in(parent, a), self._find_in(parent, b)
        if ra == rb:
            return
        if self._rank(rb) < self._rank(ra):
            ra, rb = rb, ra
        # ra (oldest) stays root
        parent.setdefault(ra, ra)
        parent[rb] = ra
        size[ra] = size.get(ra, 1) + size.pop(rb, 1)

    def _union(self, a: str, b: str) -> None:
        """Link ``a`` and ``b`` now, and in the union-find being rebuilt, if any."""
        self._union_in(self._parent, self._size, a, b)
        if self._next is not None:
            self._union_in(*self._next, a, b)

    # -- maintenance ---------------------------------------------------------------------
    def _prune(self, ev: _Evidence, horizon: float, cap: int) -> None:
        members = ev.members
        while members:
            _acct, ts = next(iter(members.items()))
            if ts >= horizon and len(members) <= cap:
                break
            members.popitem(last=False)

    def _qualifies(self, rule: LinkRule, ev: _Evidence) -> bool:
        return rule.min_accounts <= len(ev.members) <= rule.max_accounts

    def _link_all(
        self, ev: _Evidence, into: tuple[dict[str, str], dict[str, int]] | None = None
    ) -> None:
        """Link all of ``ev``'s accounts: in the given (parent, size) maps, else now and in
        the union-find being rebuilt, if any."""
        it = iter(ev.members)
        anchor = next(it)
        for acct in it:
            if into is None:
                self._union(anchor, acct)
            else:
                self._union_in(*into, anchor, acct)
        ev.linked = True

    def rebuild(self, now: float | None = None) -> None:
        """Rebuild the union-find from the evidence inside the window (drops expired links),
        all at once (the automatic rebuild runs in slices, see ``_maybe_rebuild``)."""
        if now is None:
            now = self._clock()
        self._start_rebuild(now)
        self._rebuild_step(now, None)

    def _start_rebuild(self, now: float) -> None:
        self._next = ({}, {})
        self._todo = list(self._evidence)
        self._rebuild_started = now

    def _rebuild_step(self, now: float, slice_s: float | None) -> None:
        """Move evidence values into the new union-find for about ``slice_s`` seconds of
        CPU (None: to the end), then swap it in when every value is done.  Meanwhile new
        links go into both union-finds, so the swap loses none."""
        todo, new = self._todo, self._next
        evidence, nodes, horizon = self._evidence, self._nodes, now - self.window_s
        deadline = None if slice_s is None else time.perf_counter() + slice_s
        n = 0
        while todo:
            n += 1
            if deadline is not None and n % 16 == 0 and time.perf_counter() > deadline:
                return
            ekey = todo.pop()
            ev = evidence.get(ekey)
            if ev is None:
                continue  # evicted meanwhile
            rule = self.rules.get(ekey[0])
            if rule is not None:
                self._prune(ev, horizon, rule.max_accounts + 1)
                # forget members we no longer track (keeps the parent map within max_nodes)
                for acct in [a for a in ev.members if a not in nodes]:
                    del ev.members[acct]
            if rule is None or not ev.members:
                del evidence[ekey]
                continue
            ev.linked = False
            if self._qualifies(rule, ev):
                self._link_all(ev, new)
        self._parent, self._size = new
        self._next = None
        self._last_rebuild = self._rebuild_started
        self.rebuilds += 1

    def _maybe_rebuild(self, now: float) -> None:
        if self._next is not None:
            self._rebuild_step(now, REBUILD_SLICE_S)
        elif self._last_rebuild is None:
            self._last_rebuild = now
        elif now - self._last_rebuild >= self.rebuild_every_s or now < self._last_rebuild:
            self._start_rebuild(now)
            self._rebuild_step(now, REBUILD_SLICE_S)

    # -- public API ----------------------------------------------------------------------
    def observe(
        self, account: str, evidence: Mapping[str, str | None], now: float | None = None
    ) -> None:
        """Record that ``account`` was seen with ``evidence`` (kind -> value).  Kinds without
        a rule and empty values are ignored."""
        if now is None:
            now = self._clock()
        self._maybe_rebuild(now)
        nodes = self._nodes
        if account in nodes:
            nodes.move_to_end(account)
        else:
            nodes[account] = now
            if len(nodes) > self.max_nodes:
                nodes.popitem(last=False)
        horizon = now - self.window_s
        for kind, value in evidence.items():
            rule = self.rules.get(kind)
            if rule is None or not value:
                continue
            ekey = (kind, value)
            evs = self._evidence
            ev = evs.get(ekey)
            if ev is None:
                ev = evs[ekey] = _Evidence()
                if len(evs) > self.max_evidence:
                    evs.popitem(last=False)
            else:
                evs.move_to_end(ekey)
            members = ev.members
            members[account] = now
            members.move_to_end(account)
            self._prune(ev, horizon, rule.max_accounts + 1)
            if self._qualifies(rule, ev):
                if ev.linked:
                    self._union(next(iter(members)), account)
                else:
                    self._link_all(ev)
            else:
                ev.linked = False
        if len(self._parent) > 2 * self.max_nodes:
            self.rebuild(now)

    def cluster_of(self, account: str, now: float | None = None) -> str:
        """Stable cluster id of ``account`` (``"h-"`` + 16 hex)."""
        if now is None:
            now = self._clock()
        self._maybe_rebuild(now)
        return cluster_id(self._find(account))

    def cluster_size(self, account: str, now: float | None = None) -> int:
        """Number of accounts in ``account``'s cluster (1 when unlinked)."""
        if now is None:
            now = self._clock()
        self._maybe_rebuild(now)
        return self._size.get(self._find(account), 1)

    def stats(self) -> dict[str, int]:
        return {
            "nodes": len(self._nodes),
            "evidence": len(self._evidence),
            "evidence_members": sum(len(ev.members) for ev in self._evidence.values()),
            "parent": len(self._parent),
            "clusters": sum(1 for s in self._size.values() if s > 1),
            "rebuilds": self.rebuilds,
            "rebuilding": int(self._next is not None),
        }
