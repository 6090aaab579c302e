"""Hydra linking shared by every replica through Redis (one Lua script per request).

With in-memory linking each replica sees only its share of the traffic and names a linked
cluster after the member *it* saw first, so two replicas can charge one operator to two
budgets. Here the evidence and the union-find live in Redis:

- per evidence value (kind, value): a sorted set of accounts scored by last-seen time,
  trimmed to the link window and to ``max_accounts + 1`` members;
- per account: its first-seen time, in two rotating hashes of ``first_seen_period`` each
  (an active account is carried into the current one), so accounts idle for two periods are
  forgotten and memory stays bounded by the accounts active in that time;
- per *epoch* (``floor(now / window)``): a union-find parent hash. A new epoch starts empty
  and is rebuilt from the evidence still inside the window, so a link lives at most two
  windows after its last evidence;
- the root of a component is its member seen first (ties: smallest id), so the cluster id
  (``clusters.keys.cluster_id(root)``) is the same on every replica and does not change when new
  accounts join.

When an evidence value first reaches ``min_accounts`` in an epoch, all its members are
united (O(min_accounts)); afterwards each new observation unites one account with one member.
All keys share one hash tag, so the script is valid on Redis Cluster (one slot). Keys start
with the budget state's ``keyspace`` (``{prefix}:v<layout version>``).

`RedisLinks` implements the `LinkStore` interface (clusters/links.py): ``observe`` answers at
once from the last shared answer for the account, else from its own in-memory linking (the
fallback while Redis is down); ``confirm`` runs the script.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING

from cachetools import LRUCache

from ..budgets.redis_state import RedisBudgetState, StateUnavailable
from .keys import cluster_id
from .linker import LinkRule
from .links import Evidence, LinkSettings, MemoryLinks

if TYPE_CHECKING:
    from .view import RedisLinkView

LINK = """
local parent, cur, prev = KEYS[1], KEYS[2], KEYS[3]
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local acct, first_ttl_ms = ARGV[3], tonumber(ARGV[4])
local window_ms = math.ceil(window * 1000)
local function seen(a)
  local t = redis.call('HGET', cur, a) or redis.call('HGET', prev, a)
  return tonumber(t or ARGV[1])
end
if redis.call('HEXISTS', cur, acct) == 0 then
  redis.call('HSET', cur, acct, redis.call('HGET', prev, acct) or ARGV[1])
end
local function find(x)
  local path = {}
  local p = redis.call('HGET', parent, x)
  while p and p ~= x do
    path[#path + 1] = x
    x = p
    p = redis.call('HGET', parent, x)
  end
  for _, y in ipairs(path) do redis.call('HSET', parent, y, x) end
  return x
end
local function union(a, b)
  local ra, rb = find(a), find(b)
  if ra == rb then return end
  local sa, sb = seen(ra), seen(rb)
  if sa < sb or (sa == sb and ra < rb) then
    redis.call('HSET', parent, rb, ra)
  else
    redis.call('HSET', parent, ra, rb)
  end
end
for i = 4, #KEYS, 2 do
  local z, mark = KEYS[i], KEYS[i + 1]
  local j = 5 + (i - 4)
  local mn, mx = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
  redis.call('ZADD', z, now, acct)
  redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. (now - window))
  local n = redis.call('ZCARD', z)
  if n > mx + 1 then
    redis.call('ZREMRANGEBYRANK', z, 0, n - mx - 2)
    n = mx + 1
  end
  redis.call('PEXPIRE', z, window_ms)
  if n >= mn and n <= mx then
    if redis.call('SET', mark, '1', 'NX', 'PX', window_ms * 2) then
      for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do union(acct, m) end
    else
      for _, m in ipairs(redis.call('ZRANGE', z, 0, 1)) do
        if m ~= acct then
          union(acct, m)
          break
        end
      end
    end
  end
end
redis.call('PEXPIRE', parent, window_ms * 2)
redis.call('PEXPIRE', cur, first_ttl_ms * 2)
return find(acct)
"""


class RedisLinks:
    """Shared hydra linking for one cluster definition (see module doc)."""

    def __init__(self, state: RedisBudgetState, cluster_def: str, window_s: float,
                 rules: Sequence[LinkRule], *, first_seen_period_s: float = 7 * 86400,
                 max_cached: int = 100_000, max_nodes: int = 100_000,
                 clock: Callable[[], float] | None = None) -> None:
        self.state = state
        self.window_s = float(window_s)
        self.rule_list = tuple(rules)
        self.rules = {r.kind: r for r in rules}
        self.local = MemoryLinks(window_s, max_nodes, self.rule_list, clock or state.now)
        self._tag = f"{state.keyspace}:{{links:{cluster_def}}}"
        self.first_period_s = float(first_seen_period_s)
        self._first_ms = str(max(1, round(self.first_period_s * 1000)))
        self._script = state.register(LINK)
        self._last: LRUCache[str, str] = LRUCache(maxsize=max_cached)

    # -- LinkStore ---------------------------------------------------------------------------
    def observe(self, account: str, evidence: Evidence) -> str:
        local = self.local.observe(account, evidence)
        return self._last.get(account) or local

    def confirm(self, account: str, evidence: Evidence) -> asyncio.Future[str | None]:
        return asyncio.ensure_future(self.cluster_of(account, evidence))

    @property
    def settings(self) -> LinkSettings:
        return self.local.settings

    def view(self) -> RedisLinkView:
        """Read-only view of the shared linking for the admin listener (clusters/view.py)."""
        from .view import RedisLinkView

        return RedisLinkView(self)

    def last_answer(self, account: str) -> str | None:
        """The cluster id answered for `account`'s previous request on this replica."""
        return self._last.get(account)

    def _keys_args(self, account: str, evidence: Mapping[str, str | None], now: float
                   ) -> tuple[list[str], list[str]]:
        epoch = math.floor(now / self.window_s)
        period = math.floor(now / self.first_period_s)
        keys = [f"{self._tag}:p:{epoch}", f"{self._tag}:f:{period}",
                f"{self._tag}:f:{period - 1}"]
        args = [repr(float(now)), repr(self.window_s), account, self._first_ms]
        for kind, value in evidence.items():
            rule = self.rules.get(kind)
            if rule is None or not value:
                continue
            digest = blake2b(value.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
            ev = f"{self._tag}:e:{kind}:{digest}"
            keys += [ev, f"{ev}:l:{epoch}"]
            args += [str(rule.min_accounts), str(rule.max_accounts)]
        return keys, args

    async def cluster_of(self, account: str, evidence: Mapping[str, str | None],
                         now: float | None = None) -> str | None:
        """The shared linked cluster id of `account` after recording its evidence; None when
        Redis is unavailable (the caller keeps its local answer)."""
        now = self.state.now() if now is None else now
        keys, args = self._keys_args(account, evidence, now)
        try:
            root = await self.state.call(self._script, keys, args)
        except StateUnavailable:
            return None
        if isinstance(root, bytes):
            root = root.decode("utf-8", "surrogateescape")
        cid = cluster_id(str(root))
        self._last[account] = cid
        return cid
