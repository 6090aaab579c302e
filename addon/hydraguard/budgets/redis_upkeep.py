"""The background upkeep of the Redis budget state (a mixin of ``RedisBudgetState``):
sending what Redis missed while it was down, renewing this replica's open holds, and the
inspection clients the admin listener reads with."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis


class _Unavailable(Exception):
    """Redis is down or slow (the state answers per ``on_error``)."""


class RedisUpkeep:
    """Methods of ``RedisBudgetState`` that run beside the request path."""

    # set by RedisBudgetState.__init__
    _r: Any
    _runner: Any
    cluster: bool

    @property
    def client(self) -> aioredis.Redis:
        """The inspection client (reads for the admin listener; scripts use the runner)."""
        return self._r

    async def client_for(self, key: str) -> aioredis.Redis:
        """The inspection client holding ``key``: on a Redis Cluster, the master owning its
        hash slot (budgets/redis_cluster.py), else the one client."""
        if self.cluster:
            return await self._runner.client_for(key)
        return self._r

    async def scan_clients(self) -> list[aioredis.Redis]:
        """Inspection clients covering every key: one per master on a Redis Cluster."""
        if self.cluster:
            return await self._runner.clients()
        return [self._r]

    async def _flush(self) -> None:
        """Send what Redis missed (see ``fallback.Debts``) while it answers."""
        if self._flushing:
            return
        self._flushing = True
        try:
            debts = self.debts
            while debts.settles and self.breaker.closed and not self._closed:
                k = next(iter(debts.settles))
                res, actual = debts.settles.pop(k)
                if not (await self._settle_group([(0, res, actual)], self._clock()))[0][1] \
                        and k in debts.settles:
                    return  # Redis failed again: kept for the next recovery
            while debts.charges and self.breaker.closed and not self._closed:
                (key, group), (windows, tokens) = next(iter(debts.charges.items()))
                del debts.charges[(key, group)]
                args = [repr(float(self._clock())), self._ttl, str(tokens),
                        *self._windows(windows)[1], *self._floors(key, windows)]
                try:
                    await self._run(self._charge_s, list(self.keys_of(key, group)), args)
                except _Unavailable:
                    debts.charge(key, group, windows, tokens)
                    return
        finally:
            self._flushing = False

    async def _renew_loop(self) -> None:
        """Move the expiry of this replica's open holds forward every third of the TTL."""
        while not self._closed:
            await asyncio.sleep(self._ttl_s / 3)
            await self.renew()

    async def renew(self) -> int:
        """Renew every open hold now (skipped while Redis is down); how many were moved."""
        if not self.breaker.closed or not self._open:
            return 0
        by_bucket: dict[tuple[str, str], list[str]] = {}
        for (rid, _), kk in list(self._open.items()):
            by_bucket.setdefault(kk, []).append(rid)
        now = repr(float(self._clock()))
        moved = 0
        for (kb, kx), rids in by_bucket.items():
            try:
                moved += int(await self._run(self._renew_s, [kb, kx],
                                             [now, self._ttl, *rids]))
            except _Unavailable:
                return moved
        return moved
