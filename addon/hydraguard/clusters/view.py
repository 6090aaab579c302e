"""Read-only views of the link stores, for the admin listener (admin/): which linked clusters
exist, who is in one, and why an account is linked: the linker's why-record (the pair that
linked it, its score and evidence kinds) and the evidence values it was seen with.

`LinkView` is the narrow read interface; `MemoryLinks.view()` and `RedisLinks.view()` return
one, read through the linker's public read methods (clusters/linker.py) or the Redis layout
of clusters/redis_links.py. A cluster's evidence is the values that count (between min and
max accounts) held by two or more of its members. Nothing here changes linking state (the
memory view may compress union-find paths or turn to a new epoch, as any answer does). Every
call is for an operator, not for requests: a call walks the whole store (bounded by the
store's own bounds, and by MAX_SCAN evidence keys on Redis).

Times are on the store's clock (the gateway's: epoch seconds).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .keys import cluster_id
from .link_script import FIRST, PARENT, SIZES, WHY
from .link_script import reply_text as _s
from .redis_links import digest, parse_member
from .scoring import decode_why, link_info

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
    """An account's cluster and why: the linker's why-record (`link`: the decision log's
    ``link`` object: the pair that linked it, score, evidence kinds; None when not linked)
    and the evidence values it was seen with (linking ones first)."""

    account: str
    cluster: str
    size: int
    first_seen: float | None
    evidence: list[WhyRecord]
    truncated: bool = False
    link: dict[str, Any] | None = None


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
        """The linking evidence values two or more of its members share (None: no such
        linked cluster)."""
        ...

    async def summary(self) -> tuple[int, int]:
        """(linked clusters, accounts in the largest): for metrics."""
        ...


# (kind, shown value, {account: (last seen, flagged)}) of every evidence value in the window
Values = list[tuple[str, str, dict[str, tuple[float, bool]]]]
Counts = Callable[[str, int], bool]


def _ordered(root: str, members: list[str], first: dict[str, float] | Callable) -> list[str]:
    get = first.get if isinstance(first, dict) else first
    rest = sorted((m for m in members if m != root),
                  key=lambda m: (v if (v := get(m)) is not None else math.inf, m))
    return [root, *rest]


def _summaries(comps: dict[str, list[str]], values: Values, counts: Counts
               ) -> dict[str, dict[str, int]]:
    """root -> {kind: linking values two or more of its members share}."""
    where = {m: r for r, ms in comps.items() for m in ms}
    out: dict[str, dict[str, int]] = {r: {} for r in comps}
    for kind, _v, members in values:
        if counts(kind, len(members)):
            for r, k in Counter(where[m] for m in members if m in where).items():
                if k > 1:
                    out[r][kind] = out[r].get(kind, 0) + 1
    return out


def _cluster_evidence(members: list[str], values: Values, counts: Counts) -> list[WhyRecord]:
    mine, out = set(members), []
    for kind, value, held in values:
        if counts(kind, len(held)):
            times = [t for a, (t, _f) in held.items() if a in mine]
            if len(times) > 1:
                out.append(WhyRecord(kind, value, len(held), True, max(times), min(times)))
    out.sort(key=lambda w: (-w.accounts, w.kind, w.value))
    return out[:MAX_WHY]


def _account_evidence(account: str, values: Values, counts: Counts) -> list[WhyRecord]:
    out = [WhyRecord(kind, value, len(held), counts(kind, len(held)), held[account][0])
           for kind, value, held in values if account in held]
    out.sort(key=lambda w: (not w.linking, -w.accounts, w.kind, w.value))
    return out


class MemoryLinkView:
    """`LinkView` of the in-process linker (clusters/linker.py)."""

    def __init__(self, linker: ClusterLinker) -> None:
        self.linker = linker

    def _find(self, cluster: str) -> tuple[str, list[str]] | None:
        for r, m in self.linker.linked().items():
            if cluster_id(r) == cluster:
                return r, m
        return None

    async def top(self, limit: int = 1000) -> list[LinkedCluster]:
        lk = self.linker
        comps = lk.linked()
        summary = _summaries(comps, lk.values(), lk.counts)
        out = [LinkedCluster(cluster_id(r), _ordered(r, m, lk.first_seen), summary[r])
               for r, m in comps.items()]
        out.sort(key=lambda c: (-len(c.members), c.id))
        return out[:limit]

    async def members(self, cluster: str) -> list[str] | None:
        found = self._find(cluster)
        return None if found is None else _ordered(*found, self.linker.first_seen)

    async def evidence(self, cluster: str) -> list[WhyRecord] | None:
        found = self._find(cluster)
        if found is None:
            return None
        return _cluster_evidence(found[1], self.linker.values(), self.linker.counts)

    async def why(self, account: str) -> AccountLinks:
        lk = self.linker
        recs = _account_evidence(account, lk.values(), lk.counts)
        return AccountLinks(account, lk.cluster_of(account), lk.cluster_size(account),
                            lk.first_seen(account), recs[:MAX_WHY], len(recs) > MAX_WHY,
                            lk.link_info(account))

    async def summary(self) -> tuple[int, int]:
        return self.linker.largest()


def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisLinkView:
    """`LinkView` of the shared linking in Redis (clusters/redis_links.py, key layout in
    clusters/link_script.py): the current epoch's union-find, cluster sizes and why-records,
    and the evidence sets, whichever replica reads them. Evidence values are stored as
    digests; the values this replica saw itself are shown in clear. On a Redis Cluster
    (``links.spread``, clusters/link_shards.py) each read goes to the master of its key's
    slot (the union-find is read from every account shard) and the evidence sets are
    scanned on every master (the state's ``client_for`` and ``scan_clients``)."""

    def __init__(self, links: RedisLinks) -> None:
        self.links = links

    async def _on(self, key: str):
        """The client holding ``key`` (its master on a Redis Cluster)."""
        return await self.links.state.client_for(key)

    async def _comps(self, now: float) -> tuple[dict[str, list[str]], Callable[[str], str]]:
        parent: dict[str, str] = {}
        for raw in await asyncio.gather(*(self._hgetall(k) for k in self.links.keys_of(
                PARENT, self.links.epoch_of(now)))):
            parent.update((_s(k), _s(v)) for k, v in raw.items())

        def find(x: str) -> str:
            seen = 0
            while (p := parent.get(x)) is not None and p != x and seen < 10_000:
                x, seen = p, seen + 1
            return x

        comps: dict[str, list[str]] = {}
        for n in set(parent) | set(parent.values()):
            comps.setdefault(find(n), []).append(n)
        return {r: m for r, m in comps.items() if len(m) > 1}, find

    def _counts(self, kind: str, n: int) -> bool:
        return self.links.local.linker.counts(kind, n)  # the same rules

    async def _values(self, now: float) -> tuple[Values, bool]:
        """Every evidence set's accounts in the window (values named where known here), and
        whether the scan of evidence keys was cut short (MAX_SCAN). On a Redis Cluster the
        sets are spread over the masters (``links.spread``): every master is scanned."""
        links = self.links
        prefix = links.evidence_prefix
        tail = "}" if links.spread else ""
        keys: list[tuple[str, int]] = []
        clients = await links.state.scan_clients()
        cut = False
        for i, client in enumerate(clients):
            async for k in client.scan_iter(match=_glob(prefix) + "*", count=1000):
                if len(keys) == MAX_SCAN:
                    cut = True
                    break
                keys.append((_s(k), i))
            if cut:
                break
        got: dict[str, list] = {}
        for i, client in enumerate(clients):
            mine = [k for k, j in keys if j == i]
            if not mine:
                continue
            pipe = client.pipeline(transaction=False)
            for key in mine:
                pipe.zrangebyscore(key, repr(now - links.window_s), "+inf", withscores=True)
            got.update(zip(mine, await pipe.execute(), strict=True))
        known = {(kind, digest(v)): v for kind, v in links.local.linker.value_keys()}
        out: Values = []
        for key, _i in keys:
            name = key[len(prefix):]
            kind, _, d = (name[:-len(tail)] if tail and name.endswith(tail) else name
                          ).partition(":")
            held: dict[str, tuple[float, bool]] = {}
            for member, t in got[key]:
                a, flagged = parse_member(member)
                if a not in held or held[a][0] < float(t):
                    held[a] = (float(t), flagged)
            if held:
                out.append((kind, known.get((kind, d), "#" + d), held))
        return out, cut

    async def _hgetall(self, key: str) -> dict:
        return await (await self._on(key)).hgetall(key)

    async def _first_seen(self, accounts: list[str], now: float) -> dict[str, float]:
        links = self.links
        period = links.period_of(now)
        shards: dict[int | None, list[str]] = {}
        for a in accounts:
            shards.setdefault(links.shard_of(a), []).append(a)
        out = {}
        for shard, mine in shards.items():  # one slot each (the definition's, or a shard's)
            cur, prev = (links.key(FIRST, p, shard=shard) for p in (period, period - 1))
            pipe = (await self._on(cur)).pipeline(transaction=False)
            for a in mine:
                pipe.hget(cur, a)
                pipe.hget(prev, a)
            got = await pipe.execute()
            for a, c, p in zip(mine, got[::2], got[1::2], strict=True):
                v = c if c is not None else p
                if v is not None:
                    out[a] = float(v)
        return out

    async def top(self, limit: int = 1000) -> list[LinkedCluster]:
        async with asyncio.timeout(TIMEOUT_S):
            now = self.links.state.now()
            comps, _ = await self._comps(now)
            summary = _summaries(comps, (await self._values(now))[0], self._counts)
            ranked = sorted(comps.items(), key=lambda rm: (-len(rm[1]), cluster_id(rm[0])))
            ranked = ranked[:limit]
            first = await self._first_seen([m for _, ms in ranked for m in ms], now)
            return [LinkedCluster(cluster_id(r), _ordered(r, m, first), summary[r])
                    for r, m in ranked]

    async def _find(self, cluster: str, now: float) -> tuple[str, list[str]] | None:
        for r, m in (await self._comps(now))[0].items():
            if cluster_id(r) == cluster:
                return r, m
        return None

    async def members(self, cluster: str) -> list[str] | None:
        async with asyncio.timeout(TIMEOUT_S):
            now = self.links.state.now()
            found = await self._find(cluster, now)
            if found is None:
                return None
            return _ordered(*found, await self._first_seen(found[1], now))

    async def evidence(self, cluster: str) -> list[WhyRecord] | None:
        async with asyncio.timeout(TIMEOUT_S):
            now = self.links.state.now()
            found = await self._find(cluster, now)
            if found is None:
                return None
            return _cluster_evidence(found[1], (await self._values(now))[0], self._counts)

    async def why(self, account: str) -> AccountLinks:
        async with asyncio.timeout(TIMEOUT_S):
            now = self.links.state.now()
            comps, find = await self._comps(now)
            root = find(account)
            links = self.links
            e = links.epoch_of(now)
            sizes = links.key(SIZES, e, shard=links.shard_of(root))
            whys = links.key(WHY, e, shard=links.shard_of(account))
            size_raw = await (await self._on(sizes)).hget(sizes, root)
            size = int(size_raw) if size_raw is not None and root in comps else 1
            why_raw = await (await self._on(whys)).hget(whys, account)
            why = decode_why(_s(why_raw)) if why_raw else None
            values, cut = await self._values(now)
            recs = _account_evidence(account, values, self._counts)
            first = (await self._first_seen([account], now)).get(account)
            return AccountLinks(account, cluster_id(root), size, first, recs[:MAX_WHY],
                                cut or len(recs) > MAX_WHY, link_info(size, why, now))

    async def summary(self) -> tuple[int, int]:
        async with asyncio.timeout(TIMEOUT_S):
            comps, _ = await self._comps(self.links.state.now())
            return len(comps), max((len(m) for m in comps.values()), default=0)
