"""Operator overrides of single accounts, with an expiry: allow, deny, detach.

Set through the admin listener (admin/server.py), read on every request (sync, CPU only):

- **deny**: the account is refused by the decision core (`refusals.by_override`, rule
  ``admin_deny``, a 403 in the provider's format) before any rule or budget;
- **allow**: the account's requests skip the budget step: no cluster or probation budget
  is reserved or charged, so a linked cluster or a busy proxy network never throttles it.
  The rules still apply (a region or deny rule still refuses it): allow lifts token limits,
  never compliance rules. Deny wins when an account is on both lists;
- **detach** (``unlink``, ``split``): the account leaves its linked cluster: it is charged
  under its own id and its requests add no link evidence until the entry expires (evidence
  it left before stays in the link window: see README, "Admin listener").

`MemoryOverrides` keeps them in this process. `RedisOverrides` shares them between replicas:
a hash of entries and a version counter under the budget state's keyspace; every replica
keeps a copy for the request path and re-reads it when the version changed
(`sync`, every second from the addon, and before every admin answer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .clusters.keys import cluster_id

if TYPE_CHECKING:
    from .clusters.links import Evidence, LinkSettings, LinkStore

__all__ = ["KINDS", "MemoryOverrides", "OverriddenLinks", "Override", "OverridesFull",
           "RedisOverrides", "open_overrides"]

KINDS = ("allow", "deny", "detach")
MAX_ENTRIES = 100_000  # overrides kept at once (a full store refuses new entries)
MAX_TTL_S = 366 * 86400.0
SYNC_S = 1.0  # how often a replica re-reads shared overrides (when their version changed)


class OverridesFull(Exception):
    """The store holds MAX_ENTRIES live overrides: a new one is refused."""


@dataclass(frozen=True, slots=True)
class Override:
    """One override: `kind` for `account` until `until` (epoch seconds), set by `by` at `at`."""

    kind: str
    account: str
    until: float
    by: str
    at: float
    note: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Override:
        d = json.loads(text)
        return cls(str(d["kind"]), str(d["account"]), float(d["until"]), str(d["by"]),
                   float(d["at"]), str(d.get("note") or ""))


class MemoryOverrides:
    """Overrides in this process (see module doc)."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.time,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], Override] = {}

    # -- request path (sync) -------------------------------------------------------------
    def get(self, kind: str, account: str) -> Override | None:
        """The live override of that kind for the account (an expired one is dropped)."""
        o = self._entries.get((kind, account))
        if o is None:
            return None
        if o.until <= self.clock():
            self._entries.pop((kind, account), None)
            return None
        return o

    def lookup(self, account: str | None) -> str | None:
        """``"deny"``, ``"allow"`` or None for a request's account."""
        if not self._entries or account is None:
            return None
        if self.get("deny", account) is not None:
            return "deny"
        return "allow" if self.get("allow", account) is not None else None

    def detached(self, account: str) -> bool:
        """The account was unlinked from its cluster and is not linked again for now."""
        return bool(self._entries) and self.get("detach", account) is not None

    def active(self, kind: str | None = None) -> list[Override]:
        """Live overrides (of one kind), soonest expiry first."""
        now = self.clock()
        return sorted((o for o in self._entries.values()
                       if o.until > now and (kind is None or o.kind == kind)),
                      key=lambda o: (o.until, o.kind, o.account))

    def counts(self) -> dict[str, int]:
        """Live overrides by kind (every kind present)."""
        out = dict.fromkeys(KINDS, 0)
        for o in self.active():
            out[o.kind] += 1
        return out

    def _prune(self) -> None:
        now = self.clock()
        for k in [k for k, o in self._entries.items() if o.until <= now]:
            del self._entries[k]

    # -- admin (async: the shared store writes to Redis) ---------------------------------
    async def put(self, o: Override, *, sync: bool = True) -> None:
        """Add or replace an override. OverridesFull when the store is full. `sync`: re-read
        the shared store afterwards (a batch syncs once at its end)."""
        if (o.kind, o.account) not in self._entries and len(self._entries) >= self.max_entries:
            self._prune()
            if len(self._entries) >= self.max_entries:
                raise OverridesFull(f"{self.max_entries} overrides are in force")
        self._entries[(o.kind, o.account)] = o

    async def remove(self, kind: str, account: str) -> bool:
        """Drop an override; False when there was none."""
        return self._entries.pop((kind, account), None) is not None

    async def sync(self) -> None:
        """Re-read shared overrides (nothing to do here)."""


_PUT = """
local h, z, v = KEYS[1], KEYS[2], KEYS[3]
local now, field, expiry, max = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
local old = redis.call('ZRANGEBYSCORE', z, '-inf', now)
for _, f in ipairs(old) do redis.call('HDEL', h, f) end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
if expiry > 0 then
  if redis.call('HEXISTS', h, field) == 0 and redis.call('HLEN', h) >= max then
    return -1
  end
  redis.call('HSET', h, field, ARGV[3])
  redis.call('ZADD', z, expiry, field)
else
  if redis.call('HDEL', h, field) == 0 then return 0 end
  redis.call('ZREM', z, field)
end
local ver = redis.call('INCR', v)
local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
local ttl = 86400000
if #last > 0 then ttl = math.ceil((tonumber(last[2]) - now) * 1000) + 86400000 end
redis.call('PEXPIRE', h, ttl)
redis.call('PEXPIRE', z, ttl)
redis.call('PEXPIRE', v, ttl)
return ver
"""

_SYNC = """
local ver = redis.call('GET', KEYS[3]) or '0'
if ver == ARGV[1] then return {ver} end
return {ver, redis.call('HGETALL', KEYS[1])}
"""


class RedisOverrides(MemoryOverrides):
    """Overrides shared by every replica through the Redis budget state (see module doc).
    Writes go to Redis first (StateUnavailable when it is down: nothing changes); the
    request path reads the local copy."""

    shared = True

    def __init__(self, state: Any, max_entries: int = MAX_ENTRIES) -> None:
        super().__init__(state.now, max_entries)
        self.state = state
        tag = f"{state.keyspace}:{{admin}}"
        self._keys = [f"{tag}:overrides", f"{tag}:overrides:exp", f"{tag}:overrides:ver"]
        self._put = state.register(_PUT)
        self._sync = state.register(_SYNC)
        self._ver: str | None = None

    async def put(self, o: Override, *, sync: bool = True) -> None:
        got = await self.state.call(self._put, self._keys, [
            repr(self.clock()), f"{o.kind}:{o.account}", o.to_json(), repr(o.until),
            str(self.max_entries)])
        if int(got) < 0:
            raise OverridesFull(f"{self.max_entries} overrides are in force")
        self._entries[(o.kind, o.account)] = o
        if sync:
            await self.sync()

    async def remove(self, kind: str, account: str) -> bool:
        got = await self.state.call(self._put, self._keys, [
            repr(self.clock()), f"{kind}:{account}", "", "0", str(self.max_entries)])
        self._entries.pop((kind, account), None)
        await self.sync()
        return int(got) > 0

    async def sync(self) -> None:
        """Re-read the shared overrides when their version changed (StateUnavailable when
        Redis is down: the copy in hand stays in force)."""
        got = await self.state.call(self._sync, self._keys, [self._ver or ""])
        ver = got[0].decode() if isinstance(got[0], bytes) else str(got[0])
        if len(got) < 2:
            return
        flat = got[1]
        entries: dict[tuple[str, str], Override] = {}
        for i in range(1, len(flat), 2):
            try:
                o = Override.from_json(flat[i])
            except (ValueError, KeyError, TypeError):
                continue  # not ours: ignore
            entries[(o.kind, o.account)] = o
        self._entries, self._ver = entries, ver


def open_overrides(state: Any, previous: MemoryOverrides | None = None) -> MemoryOverrides:
    """Shared overrides on a Redis budget state, else in memory; `previous` (hot reload) is
    kept when it still fits (the same Redis state, or memory to memory)."""
    shared = state is not None and hasattr(state, "register") and hasattr(state, "keyspace")
    if previous is not None:
        if shared and getattr(previous, "state", None) is state:
            return previous
        if not shared and not previous.shared:
            return previous
    return RedisOverrides(state) if shared else MemoryOverrides()


class OverriddenLinks:
    """A link store seen through the overrides: a detached account is its own cluster and
    adds no evidence. Counts accounts that move into a linked cluster (`on_link`)."""

    def __init__(self, store: LinkStore, overrides: MemoryOverrides,
                 on_link: Callable[[], None] | None = None, max_tracked: int = 100_000) -> None:
        self.store = store
        self.overrides = overrides
        self.on_link = on_link
        self._seen: dict[str, str] = {}  # account -> last linked cluster id answered
        self._max = max_tracked

    @property
    def settings(self) -> LinkSettings:
        return self.store.settings

    def link_info(self, account: str) -> dict[str, object] | None:
        """Why the account is linked (None for a detached account)."""
        if self.overrides.detached(account):
            return None
        return self.store.link_info(account)

    def stats(self) -> dict[str, object]:
        return self.store.stats()

    def observe(self, account: str, evidence: Evidence, *, flagged: bool = False) -> str:
        if self.overrides.detached(account):
            return cluster_id(account)
        cid = self.store.observe(account, evidence, flagged=flagged)
        if self.on_link is not None and cid != cluster_id(account) and \
                self._seen.get(account) != cid:
            if len(self._seen) >= self._max:
                self._seen.clear()
            self._seen[account] = cid
            self.on_link()
        return cid

    def confirm(self, account: str, evidence: Evidence, *, flagged: bool = False
                ) -> Awaitable[str | None] | None:
        if self.overrides.detached(account):
            return None
        return self.store.confirm(account, evidence, flagged=flagged)
