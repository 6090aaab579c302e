"""Read-only views of the link stores, for the admin listener (admin/): which linked clusters
exist, who is in one, and why an account is linked (the evidence it shares).

`LinkView` is the narrow read interface; `MemoryLinks.view()` and `RedisLinks.view()` return
one. Nothing here changes linking state (the memory view may compress union-find paths,
which changes no answer). Every call is for an operator, not for requests: a call walks the
whole store (bounded by the store's own bounds, and by MAX_SCAN evidence keys on Redis).

Times are on the store's clock (the gateway's: epoch seconds).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import TYPE_CHECKING, Protocol

from .keys import cluster_id

if TYPE_CHECKING:
    from .linker import ClusterLinker
    from .redis_links import RedisLinks

__all__ = ["AccountLinks", "LinkView", "LinkedCluster", "MemoryLinkView", "RedisLinkView",
           "WhyRecord"]

MAX_SCAN = 20_000  # evidence keys a Redis view reads at most (then: truncated)
MAX_WHY = 200  # evidence records returned for one account
TIMEOUT_S = 5.0


@dataclass(slots=True)
class LinkedCluster:
    """A linked cluster (two or more accounts): its members, root (first seen) first, and
    how many linking evidence values of each kind its members share."""

    id: str
    members: list[str]
    evidence: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class WhyRecord:
    """One evidence value an account was seen with. `value` is the value itself, or
    ``#<digest>`` where only a digest is stored (shared linking) and this replica has not
    seen it; `linking`: it currently links its accounts (between min and max accounts)."""

    kind: str
    value: str
    accounts: int
    linking: bool
    last_seen: float | None  # of the account (why), of any member (a cluster's evidence)
    first_seen: float | None = None  # oldest sighting still in the window (cluster evidence)


@dataclass(slots=True)
class AccountLinks:
    """An account's cluster and why: its evidence records (linking ones first)."""

    account: str
    cluster: str
    size: int
    first_seen: float | None
    evidence: list[WhyRecord]
    truncated: bool = False


class LinkView(Protocol):
    """What the admin listener reads from a link store."""

    async def top(self, limit: int = 1000) -> list[LinkedCluster]:
        """Linked clusters, largest first (at most `limit`)."""
        ...

    async def members(self, cluster: str) -> list[str] | None:
        """The accounts of a linked cluster (None: no such linked cluster)."""
        ...

    async def why(self, account: str) -> AccountLinks:
        """The account's cluster and the evidence it was seen with."""
        ...

    async def evidence(self, cluster: str) -> list[WhyRecord] | None:
        """The linking evidence values of a linked cluster (None: no such cluster)."""
        ...

    async def summary(self) -> tuple[int, int]:
        """(linked clusters, accounts in the largest): for metrics."""
        ...


def _components(nodes: Iterable[str], find) -> dict[str, list[str]]:
    comps: dict[str, list[str]] = {}
    for n in nodes:
        comps.setdefault(find(n), []).append(n)
    return {r: m for r, m in comps.items() if len(m) > 1}


def _ordered(root: str, members: list[str], first: dict[str, float] | None) -> list[str]:
    rest = sorted((m for m in members if m != root),
                  key=lambda m: ((first or {}).get(m, math.inf), m))
    return [root, *rest]


def _qualifies(rule, n: int) -> bool:
    return rule is not None and rule.min_accounts <= n <= rule.max_accounts


class MemoryLinkView:
    """`LinkView` of the in-process union-find (clusters/linker.py)."""

    def __init__(self, linker: ClusterLinker) -> None:
        self.linker = linker

    def _now(self) -> float:
        return self.linker._clock()

    def _comps(self) -> dict[str, list[str]]:
        lk = self.linker
        nodes = set(lk._parent) | set(lk._parent.values())
        return _components(nodes, lk._find)

    def _live(self, members: dict[str, float], now: float) -> int:
        horizon = now - self.linker.window_s
        return sum(1 for t in members.values() if t >= horizon)

    async def top(self, limit: int = 1000) -> list[LinkedCluster]:
        lk, now = self.linker, self._now()
        comps = self._comps()
        summary: dict[str, dict[str, int]] = {r: {} for r in comps}
        for (kind, _value), ev in list(lk._evidence.items()):
            if ev.members and _qualifies(lk.rules.get(kind), self._live(ev.members, now)):
                root = lk._find(next(iter(ev.members)))
                if root in summary:
                    summary[root][kind] = summary[root].get(kind, 0) + 1
        out = [LinkedCluster(cluster_id(r), _ordered(r, m, lk._nodes), summary[r])
               for r, m in comps.items()]
        out.sort(key=lambda c: (-len(c.members), c.id))
        return out[:limit]

    async def members(self, cluster: str) -> list[str] | None:
        for r, m in self._comps().items():
            if cluster_id(r) == cluster:
                return _ordered(r, m, self.linker._nodes)
        return None

    async def evidence(self, cluster: str) -> list[WhyRecord] | None:
        lk, now = self.linker, self._now()
        root = next((r for r in self._comps() if cluster_id(r) == cluster), None)
        if root is None:
            return None
        out = []
        for (kind, value), ev in list(lk._evidence.items()):
            times = [t for t in ev.members.values() if t >= now - lk.window_s]
            if times and _qualifies(lk.rules.get(kind), len(times)) and \
                    lk._find(next(iter(ev.members))) == root:
                out.append(WhyRecord(kind, value, len(times), True, max(times), min(times)))
        out.sort(key=lambda w: (-w.accounts, w.kind, w.value))
        return out[:MAX_WHY]

    async def why(self, account: str) -> AccountLinks:
        lk, now = self.linker, self._now()
        root = lk._find(account)
        recs = []
        for (kind, value), ev in list(lk._evidence.items()):
            seen = ev.members.get(account)
            if seen is not None and seen >= now - lk.window_s:
                n = self._live(ev.members, now)
                recs.append(WhyRecord(kind, value, n, _qualifies(lk.rules.get(kind), n), seen))
        recs.sort(key=lambda w: (not w.linking, -w.accounts, w.kind, w.value))
        return AccountLinks(account, cluster_id(root), lk._size.get(root, 1),
                            lk._nodes.get(account), recs[:MAX_WHY], len(recs) > MAX_WHY)

    async def summary(self) -> tuple[int, int]:
        sizes = [s for s in self.linker._size.values() if s > 1]
        return len(sizes), max(sizes, default=0)


def _digest(value: str) -> str:
    """The digest RedisLinks names an evidence key by (see redis_links._keys_args)."""
    return blake2b(value.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _s(v: bytes | str) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


class RedisLinkView:
    """`LinkView` of the shared linking in Redis (clusters/redis_links.py): the current
    epoch's union-find and the evidence sets, whichever replica reads them. Evidence values
    are stored as digests; the values this replica saw itself are shown in clear."""

    def __init__(self, links: RedisLinks) -> None:
        self.links = links

    @property
    def _r(self):
        return self.links.state.client

    def _epoch(self, now: float) -> int:
        return math.floor(now / self.links.window_s)

    async def _parents(self, now: float) -> dict[str, str]:
        raw = await self._r.hgetall(f"{self.links._tag}:p:{self._epoch(now)}")
        return {_s(k): _s(v) for k, v in raw.items()}

    @staticmethod
    def _finder(parent: dict[str, str]):
        def find(x: str) -> str:
            seen = 0
            while (p := parent.get(x)) is not None and p != x and seen < 10_000:
                x, seen = p, seen + 1
            return x
        return find

    async def _evidence_keys(self, now: float) -> tuple[list[tuple[str, str, str]], bool]:
        """[(kind, digest, key)] of the evidence sets, and whether the scan was cut short."""
        tag = self.links._tag
        prefix = f"{tag}:e:"
        out, n = [], 0
        async for k in self._r.scan_iter(match=_glob(prefix) + "*", count=1000):
            key = _s(k)
            if ":l:" in key[len(prefix):]:
                continue  # a link mark, not an evidence set
            n += 1
            if n > MAX_SCAN:
                return out, True
            kind, _, digest = key[len(prefix):].partition(":")
            out.append((kind, digest, key))
        return out, False

    async def _evidence(self, now: float, account: str | None = None):
        """[(kind, digest, live members or (count, account's score))] of every set."""
        keys, cut = await self._evidence_keys(now)
        lo = repr(now - self.links.window_s)
        pipe = self._r.pipeline(transaction=False)
        for _, _, key in keys:
            if account is None:
                pipe.zrangebyscore(key, lo, "+inf")
            else:
                pipe.zcount(key, lo, "+inf")
                pipe.zscore(key, account)
        got = await pipe.execute() if keys else []
        if account is not None:
            got = list(zip(got[::2], got[1::2], strict=True))
        return [(k, d, g) for (k, d, _), g in zip(keys, got, strict=True)], cut

    async def _comps(self, now: float) -> tuple[dict[str, list[str]], dict[str, str]]:
        parent = await self._parents(now)
        find = self._finder(parent)
        return _components(set(parent) | set(parent.values()), find), parent

    async def _first_seen(self, accounts: list[str], now: float) -> dict[str, float]:
        period = math.floor(now / self.links.first_period_s)
        tag = self.links._tag
        pipe = self._r.pipeline(transaction=False)
        for a in accounts:
            pipe.hget(f"{tag}:f:{period}", a)
            pipe.hget(f"{tag}:f:{period - 1}", a)
        got = await pipe.execute() if accounts else []
        out = {}
        for a, cur, prev in zip(accounts, got[::2], got[1::2], strict=True):
            v = cur if cur is not None else prev
            if v is not None:
                out[a] = float(v)
        return out

    def _known(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The values behind (kind, digest) pairs that this replica's own linking saw."""
        out: dict[tuple[str, str], str] = {}
        for kind, v in list(self.links.local.linker._evidence):
            if len(out) == len(wanted):
                break
            if (kind, d := _digest(v)) in wanted:
                out[(kind, d)] = v
        return out

    async def top(self, limit: int = 1000) -> list[LinkedCluster]:
        async with asyncio.timeout(TIMEOUT_S):
            now = self.links.state.now()
            comps, parent = await self._comps(now)
            find = self._finder(parent)
            summary: dict[str, dict[str, int]] = {r: {} for r in comps}
            for kind, _d, members in (await self._evidence(now))[0]:
                if members and _qualifies(self.links.rules.get(kind), len(members)):
                    root = find(_s(members[0]))
                    if root in summary:
                        summary[root][kind] = summary[root].get(kind, 0) + 1
            ranked = sorted(comps.items(), key=lambda rm: (-len(rm[1]), cluster_id(rm[0])))
            ranked = ranked[:limit]
            first = await self._first_seen([m for _, ms in ranked for m in ms], now)
            return [LinkedCluster(cluster_id(r), _ordered(r, m, first), summary[r])
                    for r, m in ranked]

    async def members(self, cluster: str) -> list[str] | None:
        async with asyncio.timeout(TIMEOUT_S):
            now = self.links.state.now()
            for r, m in (await self._comps(now))[0].items():
                if cluster_id(r) == cluster:
                    return _ordered(r, m, await self._first_seen(m, now))
            return None

    async def evidence(self, cluster: str) -> list[WhyRecord] | None:
        async with asyncio.timeout(TIMEOUT_S):
            now = self.links.state.now()
            comps, parent = await self._comps(now)
            root = next((r for r in comps if cluster_id(r) == cluster), None)
            if root is None:
                return None
            find = self._finder(parent)
            lo = repr(now - self.links.window_s)
            keys = []
            for kind, digest, members in (await self._evidence(now))[0]:
                if members and _qualifies(self.links.rules.get(kind), len(members)) and \
                        find(_s(members[0])) == root:
                    keys.append((kind, digest, len(members)))
            pipe = self._r.pipeline(transaction=False)
            for kind, digest, _ in keys:
                pipe.zrangebyscore(f"{self.links._tag}:e:{kind}:{digest}", lo, "+inf",
                                   withscores=True)
            got = await pipe.execute() if keys else []
            known = self._known({(k, d) for k, d, _ in keys})
            out = []
            for (kind, digest, n), scored in zip(keys, got, strict=True):
                times = [float(s) for _, s in scored] or [math.nan]
                out.append(WhyRecord(kind, known.get((kind, digest), "#" + digest), n, True,
                                     max(times), min(times)))
            out.sort(key=lambda w: (-w.accounts, w.kind, w.value))
            return out[:MAX_WHY]

    async def why(self, account: str) -> AccountLinks:
        async with asyncio.timeout(TIMEOUT_S):
            now = self.links.state.now()
            comps, parent = await self._comps(now)
            root = self._finder(parent)(account)
            size = len(comps.get(root, ())) or 1
            ev, cut = await self._evidence(now, account)
            known = self._known({(k, d) for k, d, (_, score) in ev if score is not None})
            recs = []
            for kind, digest, (count, score) in ev:
                if score is None or count == 0:
                    continue
                recs.append(WhyRecord(kind, known.get((kind, digest), "#" + digest),
                                      int(count), _qualifies(self.links.rules.get(kind),
                                                             int(count)), float(score)))
            recs.sort(key=lambda w: (not w.linking, -w.accounts, w.kind, w.value))
            first = (await self._first_seen([account], now)).get(account)
            return AccountLinks(account, cluster_id(root), size, first, recs[:MAX_WHY],
                                cut or len(recs) > MAX_WHY)

    async def summary(self) -> tuple[int, int]:
        async with asyncio.timeout(TIMEOUT_S):
            comps, _ = await self._comps(self.links.state.now())
            return len(comps), max((len(m) for m in comps.values()), default=0)
