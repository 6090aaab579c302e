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

All keys share one hash tag, so the script is valid on Redis Cluster (one slot). Keys start
with the budget state's ``keyspace`` (``{prefix}:v<layout version>``).

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
from .link_script import LINK
from .links import Evidence, LinkSettings, MemoryLinks
from .scoring import KINDS, Why, decode_why, link_info

if TYPE_CHECKING:
    from .view import RedisLinkView

__all__ = ["RedisLinks", "digest", "parse_member"]

# key parts after the tag (link_script.py's KEYS): parent hash, first seen, pair scores,
# partners, cluster sizes, why-records (per epoch; first seen per period), evidence sets
PARENT, FIRST, PAIRS, PARTNERS, SIZES, WHY, EVIDENCE = "p", "f", "q", "n", "s", "w", "e"


def digest(value: str) -> str:
    """The id an evidence value's set is named by (``{tag}:e:{kind}:{digest}``)."""
    return blake2b(value.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def parse_member(member: bytes | str) -> tuple[str, bool]:
    """(account, flagged) of an evidence set member (``account<TAB>1`` or ``<TAB>0``)."""
    m = member.decode("utf-8", "surrogateescape") if isinstance(member, bytes) else member
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
        self._tag = f"{state.keyspace}:{{links:{cluster_def}}}"
        self.first_period_s = float(first_seen_period_s)
        self._first_ms = str(max(1, round(self.first_period_s * 1000)))
        self._script = state.register(LINK)
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

    def key(self, part: str, n: int | str) -> str:
        """The Redis key of one structure: ``part`` (PARENT, FIRST, ...) of epoch/period
        ``n``, or EVIDENCE with ``n`` = ``kind:digest``."""
        return f"{self._tag}:{part}:{n}"

    def epoch_of(self, now: float) -> int:
        """The epoch whose union-find answers at ``now``."""
        return math.floor(now / self.window_s)

    def period_of(self, now: float) -> int:
        """The first-seen period of ``now`` (the hash of the previous one is read too)."""
        return math.floor(now / self.first_period_s)

    def _keys_args(self, account: str, evidence: Mapping[str, str | None], flagged: bool,
                   now: float) -> tuple[list[str], list[str]]:
        w = self.window_s
        e = self.epoch_of(now)
        period = self.period_of(now)
        k = self.key
        keys = [k(PARENT, e), k(PARENT, e + 1), k(FIRST, period), k(FIRST, period - 1),
                k(PAIRS, e), k(PAIRS, e - 1), k(PARTNERS, e), k(PARTNERS, e - 1),
                k(SIZES, e), k(SIZES, e + 1), k(WHY, e), k(WHY, e + 1)]
        args = [repr(float(now)), repr(w), account, self._first_ms, repr(e * w), *self._fixed,
                "1" if flagged else "0"]
        for kind in self._order:
            value = evidence.get(kind)
            if not value:
                continue
            rule = self.rules[kind]
            d = digest(value)
            keys.append(k(EVIDENCE, f"{kind}:{d}"))
            args += [kind, d, str(rule.min_accounts), str(rule.max_accounts),
                     repr(float(rule.weight)), repr(float(rule.flagged_weight))]
        return keys, args

    async def cluster_of(self, account: str, evidence: Mapping[str, str | None],
                         now: float | None = None, *, flagged: bool = False) -> str | None:
        """The shared linked cluster id of `account` after recording its evidence; None when
        Redis is unavailable (the caller keeps its local answer)."""
        now = self.state.now() if now is None else now
        keys, args = self._keys_args(account, evidence, flagged, now)
        try:
            got = await self.state.call(self._script, keys, args)
        except StateUnavailable:
            return None
        root, size, why = (x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else x
                           for x in got)
        cid = cluster_id(str(root))
        self._last[account] = (cid, int(size), decode_why(why) if why else None)
        return cid
