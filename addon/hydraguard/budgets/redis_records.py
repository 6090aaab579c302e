"""Batch and upload records shared by every replica through Redis (see records.py).

One hash per record, ``{keyspace}:rec:{<key>}`` (its own hash slot): field ``d`` the JSON
document, ``n:<budget id>`` the tokens each budget holds for it, ``x`` set once it was settled
exactly; a TTL from when it was written. ``settle`` is one Lua script (`SETTLE`), so moving
the nets and reading by how much they moved is atomic: no two replicas give the same tokens
back. Operations go through the budget state's timeout and circuit breaker
(`RedisBudgetState.call`); while Redis is unavailable a process-local copy answers what this
replica wrote itself (`MemoryRecords`), and what cannot be answered fails safe (a batch over
an unknown file is refused, a refund is skipped).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .records import MemoryRecords, Record
from .redis_keys import safe_part
from .redis_state import RedisBudgetState, StateUnavailable

__all__ = ["RedisRecords"]

PUT = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local mode = ARGV[1]
local out = {}
if mode == 'lower' and redis.call('HEXISTS', KEYS[1], 'x') == 1 then return out end
for i = 2, #ARGV, 2 do
  local f = 'n:' .. ARGV[i]
  local old = tonumber(redis.call('HGET', KEYS[1], f))
  if old then
    local t = tonumber(ARGV[i + 1])
    if mode == 'lower' and t > old then t = old end
    redis.call('HSET', KEYS[1], f, string.format('%d', t))
    out[#out + 1] = ARGV[i]
    out[#out + 1] = string.format('%d', t - old)
  end
end
if mode == 'exact' then redis.call('HSET', KEYS[1], 'x', '1') end
return out
"""


class RedisRecords:
    """`RecordStore` on the Redis budget state (see the module doc)."""

    def __init__(self, state: RedisBudgetState, max_local: int = 10_000) -> None:
        self.state = state
        self.local = MemoryRecords(state.now, max_local)
        self._put = state.register(PUT)
        self._settle = state.register(SETTLE)
        self._get = state.register("return redis.call('HGETALL', KEYS[1])")

    def _key(self, key: str) -> str:
        return f"{self.state.keyspace}:rec:{{{safe_part(key)}}}"

    async def put(self, key: str, doc: dict[str, Any], ttl: float,
                  nets: Mapping[str, int] | None = None) -> bool:
        self.local.put_nowait(key, doc, ttl, nets)
        args = [str(max(1, int(ttl * 1000))), "d", json.dumps(doc, separators=(",", ":"))]
        for budget, n in (nets or {}).items():
            args += (f"n:{budget}", str(int(n)))
        try:
            await self.state.call(self._put, [self._key(key)], args)
        except StateUnavailable:
            return False
        return True

    async def get(self, key: str) -> Record | None:
        try:
            raw = await self.state.call(self._get, [self._key(key)], [])
        except StateUnavailable:
            return self.local.get_nowait(key)
        if not raw:
            return self.local.get_nowait(key)
        fields = {_s(raw[i]): _s(raw[i + 1]) for i in range(0, len(raw), 2)}
        try:
            doc = json.loads(fields["d"])
        except (KeyError, ValueError):
            return None
        nets = {k[2:]: int(v) for k, v in fields.items() if k.startswith("n:")}
        return doc, nets, "x" in fields

    async def settle(self, key: str, targets: Mapping[str, int], mode: str
                     ) -> dict[str, int] | None:
        if mode not in ("exact", "lower"):
            raise ValueError(f"mode must be 'exact' or 'lower', got {mode!r}")
        args = [mode]
        for budget, t in targets.items():
            args += (budget, str(int(t)))
        try:
            raw = await self.state.call(self._settle, [self._key(key)], args)
        except StateUnavailable:
            return None  # no refund now: the batch keeps what it was charged
        if raw is None:
            return None
        return {_s(raw[i]): int(raw[i + 1]) for i in range(0, len(raw), 2)}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
