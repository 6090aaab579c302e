"""Hydra linking shared by every replica through Redis (one Lua script per request).

With in-memory linking each replica sees only its share of the traffic and names a linked
cluster after the member *it* saw first, so two replicas can charge one operator to two
budgets. Here the evidence, the pair scores and the union-find live in Redis, with the same
semantics and arithmetic as `ClusterLinker` (clusters/linker.py; the script and its key
layout: clusters/link_script.py):

- per evidence value (kind, value): a sorted set of accounts scored by last-seen time (each
  marked flagged or not), trimmed to the window and to ``max_accounts + 1`` members;
- per account: its first-seen time, in two rotating hashes of ``first_seen_period`` each
  (an active account is carried into the current one), so accounts idle for two periods are
  forgotten; the root of a component is its member seen first (ties: smallest id), so the
  cluster id (``clusters.keys.cluster_id(root)``) is the same on every replica;
- per *epoch* (``floor(now / window)``): pair scores and partner lists (read back from the
  previous epoch), and the union-find with cluster sizes and why-records; links made in
  epoch e go into e's and e+1's union-find, so a link lasts one to two windows after the
  evidence that made it.

On a single Redis all keys share one hash tag ``{links:<definition>}`` and one script does
everything. On a Redis Cluster (``state.cluster``) nothing of a definition stays on one
slot: the evidence sets get a hash tag each and the per-account structures (first seen,
partners, union-find, sizes, why-records, pair scores) are cut into shards by a hash of the
account, each shard a hash tag ``{links:<definition>:<shard>}``; a request takes per-slot
steps and the union-find is lock-free (clusters/link_shards.py describes the layout and the
atomicity given up; clusters/shard_links.py drives it). Keys start with the budget state's
``keyspace`` (``{prefix}:v<layout version>``).

`RedisLinks` implements the `LinkStore` interface (clusters/links.py): ``observe`` answers at
once from the last shared answer for the account, else from its own in-memory linking (the
fallback while Redis is down); ``confirm`` runs the script.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from hashlib import blake2b
from typing import TYPE_CHECKING

from cachetools import LRUCache

from ..budgets.redis_state import RedisBudgetState, StateUnavailable
from ..policy.budget_model import LinkConfig
from .keys import cluster_id
from .link_script import EVIDENCE, FIRST, LINK, PAIRS, PARENT, PARTNERS, SIZES, WHY, reply_text
from .links import Evidence, LinkSettings, MemoryLinks
from .scoring import KINDS, Why, decode_why, link_info
from .shard_links import SHARDS, ShardedLinking, Value, shard_of

if TYPE_CHECKING:
    from .view import RedisLinkView

__all__ = ["EVIDENCE", "FIRST", "PAIRS", "PARENT", "PARTNERS", "SIZES", "WHY", "RedisLinks",
           "digest", "parse_member"]


def digest(value: str) -> str:
    """The id an evidence value's set is named by (``{tag}:e:{kind}:{digest}``)."""
    return blake2b(value.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def parse_member(member: bytes | str) -> tuple[str, bool]:
    """(account, flagged) of an evidence set member (``account<TAB>1`` or ``<TAB>0``)."""
    m = reply_text(member)
    return m[:-2], m.endswith("\t1")


class RedisLinks:
    """Shared hydra linking for one cluster definition (see module doc)."""

    def __init__(self, state: RedisBudgetState, cluster_def: str, config: LinkConfig, *,
                 first_seen_period_s: float = 7 * 86400, max_cached: int = 100_000,
                 clock: Callable[[], float] | None = None) -> None:
        self.state = state
        self.config = config
        self.window_s = float(config.window_s)
        self.rules = {r.kind: r for r in config.rules}
        self._order = tuple(k for k in KINDS if k in self.rules)
        self.local = MemoryLinks(config, clock or state.now)
        self._base = f"{state.keyspace}:{{links:{cluster_def}"
        self._tag = self._base + "}"
        self.first_period_s = float(first_seen_period_s)
        self.first_ms = str(max(1, round(self.first_period_s * 1000)))
        self._script = state.register(LINK)
        # on a Redis Cluster: evidence sets and account shards on slots of their own
        self.spread = bool(getattr(state, "cluster", False))
        self._etag = f"{self._base}:e:"
        self._sharded = ShardedLinking(self) if self.spread else None
        # account -> (cluster id, cluster size, why-record) of the last shared answer
        self._last: LRUCache[str, tuple[str, int, Why | None]] = LRUCache(maxsize=max_cached)
        c = config
        self._fixed = [str(c.candidates), str(c.max_partners), repr(float(c.threshold)),
                       repr(float(c.multi_exit_s)), str(c.max_pairs), str(c.max_why)]

    # -- LinkStore ---------------------------------------------------------------------------
    def observe(self, account: str, evidence: Evidence, *, flagged: bool = False) -> str:
        local = self.local.observe(account, evidence, flagged=flagged)
        got = self._last.get(account)
        return got[0] if got is not None else local

    def confirm(self, account: str, evidence: Evidence, *, flagged: bool = False
                ) -> asyncio.Future[str | None]:
        return asyncio.ensure_future(self.cluster_of(account, evidence, flagged=flagged))

    def link_info(self, account: str) -> dict[str, object] | None:
        got = self._last.get(account)
        if got is None:
            return self.local.link_info(account)
        return link_info(got[1], got[2], self.state.now())

    @property
    def settings(self) -> LinkSettings:
        return self.config

    def stats(self) -> dict[str, object]:
        return {"backend": "redis", "shared_answers": len(self._last),
                "local": self.local.linker.stats()}

    def view(self) -> RedisLinkView:
        """Read-only view of the shared linking for the admin listener (clusters/view.py)."""
        from .view import RedisLinkView

        return RedisLinkView(self)

    def last_answer(self, account: str) -> str | None:
        """The cluster id answered for `account`'s previous request on this replica."""
        got = self._last.get(account)
        return got[0] if got is not None else None

    def key(self, part: str, n: int | str, *, shard: int | None = None) -> str:
        """The Redis key of one structure: ``part`` (PARENT, FIRST, ...) of epoch/period
        ``n`` (on a Redis Cluster: of ``shard``), or EVIDENCE with ``n`` = ``kind:digest``
        (single Redis)."""
        if shard is None:
            return f"{self._tag}:{part}:{n}"
        return f"{self._base}:{shard}}}:{part}:{n}"

    def shard_of(self, account: str) -> int | None:
        """The shard of an account's structures (None on a single Redis: one tag)."""
        return shard_of(account) if self.spread else None

    def keys_of(self, part: str, n: int) -> list[str]:
        """Every key of ``part`` of epoch/period ``n``: one per shard on a Redis Cluster."""
        if not self.spread:
            return [self.key(part, n)]
        return [self.key(part, n, shard=s) for s in range(SHARDS)]

    def evidence_key(self, kind: str, d: str) -> str:
        """The sorted set of one evidence value (``d``: its digest)."""
        return f"{self._etag}{kind}:{d}}}" if self.spread else self.key(EVIDENCE, f"{kind}:{d}")

    @property
    def evidence_prefix(self) -> str:
        """The start of every evidence set's key (``kind:digest`` follows; on a Redis
        Cluster, ``spread``, then the closing ``}`` of the set's own hash tag)."""
        return self._etag if self.spread else self.key(EVIDENCE, "")

    def epoch_of(self, now: float) -> int:
        """The epoch whose union-find answers at ``now``."""
        return math.floor(now / self.window_s)

    def period_of(self, now: float) -> int:
        """The first-seen period of ``now`` (the hash of the previous one is read too)."""
        return math.floor(now / self.first_period_s)

    def _values(self, evidence: Mapping[str, str | None]) -> list[Value]:
        """(kind, digest, rule) of the request's evidence values, in scoring order."""
        return [(kind, digest(v), self.rules[kind]) for kind in self._order
                if (v := evidence.get(kind))]

    def _keys_args(self, account: str, values: list[Value], flagged: bool,
                   now: float) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of the one script (link_script.py)."""
        w = self.window_s
        e = self.epoch_of(now)
        period = self.period_of(now)
        k = self.key
        keys = [k(PARENT, e), k(PARENT, e + 1), k(FIRST, period), k(FIRST, period - 1),
                k(PAIRS, e), k(PAIRS, e - 1), k(PARTNERS, e), k(PARTNERS, e - 1),
                k(SIZES, e), k(SIZES, e + 1), k(WHY, e), k(WHY, e + 1)]
        args = [repr(float(now)), repr(w), account, self.first_ms, repr(e * w), *self._fixed,
                "1" if flagged else "0"]
        for kind, d, rule in values:
            keys.append(self.evidence_key(kind, d))
            args += [kind, d, str(rule.min_accounts), str(rule.max_accounts),
                     repr(float(rule.weight)), repr(float(rule.flagged_weight))]
        return keys, args

    async def cluster_of(self, account: str, evidence: Mapping[str, str | None],
                         now: float | None = None, *, flagged: bool = False) -> str | None:
        """The shared linked cluster id of `account` after recording its evidence; None when
        Redis is unavailable (the caller keeps its local answer)."""
        now = self.state.now() if now is None else now
        values = self._values(evidence)
        try:
            if self._sharded is not None:
                got = await self._sharded.cluster_of(account, values, flagged, now)
            else:
                keys, args = self._keys_args(account, values, flagged, now)
                got = await self.state.call(self._script, keys, args)
        except StateUnavailable:
            return None
        root, size, why = (reply_text(x) for x in got)
        cid = cluster_id(str(root))
        self._last[account] = (cid, int(size), decode_why(why) if why else None)
        return cid
