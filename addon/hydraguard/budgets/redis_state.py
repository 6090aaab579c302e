"""Budget state shared by all proxy replicas through Redis.

- Reserve/settle run as Lua scripts (``scripts.py``; EVALSHA through
  ``redis_scripts.ScriptRunner``, reloaded automatically after a Redis restart), so replicas
  never read-then-write. The budgets of one request are reserved in one script call.
- Keys (``redis_keys.py``): per budget key a bucket hash and a hold index, under
  ``{prefix}:v<LAYOUT_VERSION>:`` and the hash tag of the key's group (the budgets of one
  cluster share one hash slot, so one script reserves them all). With ``cluster=True`` the
  scripts go to the master of their slot on a Redis Cluster (``redis_cluster.py``).
- Holds expire ``reservation_ttl_s`` after they were taken or last renewed; this replica
  renews its open holds every third of that, so the holds of a replica that dies are given
  back within ``reservation_ttl_s`` (reclaimed by the next script touching the bucket).
- Time is *not* Redis server time: ``now`` comes from the injected clock (default
  ``time.time``) and is passed to the scripts.  Replicas therefore need synchronised
  clocks (NTP); a replica whose clock lags never refills twice (see ``bucket.py``), one
  that runs ahead refills early by its skew.
- Every operation is bounded by ``timeout_ms``. Failures feed a circuit breaker
  (``breaker.py``): it opens after ``failures`` failures in a row (one warning: budget
  state DOWN), is probed off the request path after a back-off, and closes after
  ``successes`` probes in a row (one warning: budget state RECOVERED). A failed operation,
  and every operation while the breaker is open, is answered per ``on_error``: ``"open"``
  from this replica's 1/``replicas`` share of the budget (``fallback.LocalShare``; marked
  degraded, backend ``"local"``), ``"closed"`` with a refusal (``retry_after_s =
  closed_retry_after_s``). What Redis missed meanwhile (usage served from the local share,
  failed settles) is sent once it answers again (``fallback.Debts``). Every script that
  may create a bucket carries the levels last seen for it, so a Redis that restarted
  empty does not hand out the budget again (floors, ``scripts.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import bucket, scripts
from .breaker import Breaker
from .fallback import Debts, LocalShare
from .redis_keys import bucket_keys, redact_url, safe_part, script_args
from .redis_scripts import LuaScript, ScriptRunner
from .redis_upkeep import RedisUpkeep, _Unavailable
from .spec import Reservation, ReserveResult, WindowSpec, WindowState

__all__ = ["LAYOUT_VERSION", "RedisBudgetState", "StateUnavailable"]

LAYOUT_VERSION = 5  # of the Redis key layout (module doc); bump on any change of layout

log = logging.getLogger("hydraguard.state")

_PROBE = LuaScript("return 1")
_Ask = tuple[str, Sequence[WindowSpec], int]


StateUnavailable = _Unavailable  # public name: Redis down or slow (see RedisBudgetState.call)


class RedisBudgetState(RedisUpkeep):
    """``BudgetState`` backed by Redis (see module doc)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "hg",
        timeout_ms: float = 2000,
        on_error: Literal["open", "closed"] = "open",
        clock: Callable[[], float] = time.time,
        reservation_ttl_s: float = 60.0,
        replicas: int = 1,
        down_backoff_s: float = 1.0,
        closed_retry_after_s: float = 1.0,
        client: aioredis.Redis | None = None,
        max_connections: int = 64,
        breaker: Breaker | None = None,
        max_pending: int = 100_000,
        max_keys: int = 100_000,
        cluster: bool = False,
    ) -> None:
        if on_error not in ("open", "closed"):
            raise ValueError(f"on_error must be 'open' or 'closed', got {on_error!r}")
        self._prefix = safe_part(prefix)
        self._keyspace = f"{self._prefix}:v{LAYOUT_VERSION}"
        self._timeout_s = timeout_ms / 1000.0
        self._on_error = on_error
        self._clock = clock
        self._ttl_s = float(reservation_ttl_s)
        self._ttl = repr(self._ttl_s)
        self._closed_retry = closed_retry_after_s
        self.url = redact_url(url)  # for log lines: never the password
        self.cluster = cluster
        if cluster:  # scripts routed per hash slot (redis_cluster.py); no admin client
            from .redis_cluster import ClusterRunner

            client = None
            self._runner = ClusterRunner(url, connect_timeout_s=self._timeout_s,
                                         max_connections=max_connections)
        elif client is None:
            # admin/inspection client (ping, scans); scripts go through the runner below
            client = aioredis.Redis.from_url(
                url,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                health_check_interval=0,
            )
            self._runner = ScriptRunner.from_url(
                url, connect_timeout_s=self._timeout_s, max_connections=max_connections
            )
        else:
            self._runner = ScriptRunner(
                client.connection_pool.make_connection, max_connections=max_connections
            )
        self._r = client
        self._reserve_s = LuaScript(scripts.RESERVE)
        self._settle_s = LuaScript(scripts.SETTLE)
        self._peek_s = LuaScript(scripts.PEEK)
        self._renew_s = LuaScript(scripts.RENEW)
        self._charge_s = LuaScript(scripts.CHARGE)
        self.breaker = breaker or Breaker(backoff_s=down_backoff_s,
                                          max_backoff_s=max(2.0, 2 * down_backoff_s))
        self.local = LocalShare(replicas, clock, max_keys=max_keys)
        self.debts = Debts()
        # open shared holds: (reservation id, bucket key) -> (bucket key, hold index key);
        # renewed while open; the oldest forgotten beyond max_pending (then it expires)
        self._open: dict[tuple[str, str], tuple[str, str]] = {}
        self._max_pending = max_pending
        self._tasks: set[asyncio.Task] = set()
        self._renewing = self._probing = self._flushing = False
        self._closed = False
        # reservation ids: unique across replicas (random per process) and cheap per request
        self._rid_prefix = os.urandom(6).hex()
        self._rid_seq = itertools.count(1)
        self._wargs: dict[int, tuple[Any, tuple[tuple[WindowSpec, ...], list[str]]]] = {}
        self._keycache: dict[tuple[str, str | None], tuple[str, str]] = {}
        # called with (seconds, ok) after every script call (admin metrics: round trips)
        self.observer: Callable[[float, bool], None] | None = None

    # -- health --------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self.breaker.closed

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _failed(self, exc: BaseException) -> None:
        if self.breaker.failure(time.monotonic()) == "down":
            log.warning(
                "budget state DOWN: redis %s unavailable (%s: %s); on_error=%s (%s), "
                "probing from %gs", self.url, type(exc).__name__, exc, self._on_error,
                f"local share 1/{self.local.replicas}" if self._on_error == "open"
                else "refusing", self.breaker.backoff)
            self._spawn(self._probe())

    async def _probe(self) -> None:
        """Probe a down Redis off the request path until the breaker closes."""
        if self._probing:
            return
        self._probing = True
        try:
            while not self._closed and not self.breaker.closed:
                await asyncio.sleep(self.breaker.probe_delay(time.monotonic()))
                try:
                    async with asyncio.timeout(self._timeout_s):
                        await self._runner.run(_PROBE, [], [])
                except Exception:
                    self.breaker.probe_failed(time.monotonic())
                    continue
                if self.breaker.probe_ok(time.monotonic()) == "recovered":
                    log.warning("budget state RECOVERED: redis %s healthy again (%d updates "
                                "to send)", self.url, len(self.debts))
                    self.local.reset()  # the next outage starts from the shared levels
                    self._spawn(self._flush())
        finally:
            self._probing = False

    async def _run(self, script: LuaScript, keys: list[str], args: list[str]):
        if not self.breaker.closed:
            raise _Unavailable
        t0, ok = time.perf_counter(), False
        try:
            async with asyncio.timeout(self._timeout_s):
                res = await self._runner.run(script, keys, args)
            ok = True
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise _Unavailable from exc
        finally:
            if self.observer is not None:
                self.observer(time.perf_counter() - t0, ok)
        self.breaker.success()
        return res

    # -- shared scripts (used by redis_links) -----------------------------------------------
    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def keyspace(self) -> str:
        """``{prefix}:v{LAYOUT_VERSION}``: the start of every key this layout writes."""
        return self._keyspace

    def now(self) -> float:
        return self._clock()

    def register(self, source: str) -> LuaScript:
        """Another Lua script to run with ``call``."""
        return LuaScript(source)

    async def call(self, script: LuaScript, keys: list[str], args: list[str]):
        """Run a registered script with this backend's timeout and circuit breaker; raises
        StateUnavailable when Redis is down or slow."""
        return await self._run(script, keys, args)

    # -- keys ----------------------------------------------------------------------------
    def keys_of(self, key: str, group: str | None = None) -> tuple[str, str]:
        """(bucket hash, hold index) of a budget key (``redis_keys.bucket_keys``), cached."""
        cache = self._keycache
        hit = cache.get((key, group))
        if hit is None:
            if len(cache) >= 65_536:
                cache.clear()
            hit = cache[(key, group)] = bucket_keys(self._keyspace, key, group)
        return hit

    def _windows(self, windows: Sequence[WindowSpec]) -> tuple[tuple[WindowSpec, ...], list[str]]:
        """The windows as a tuple, validated once, and their window block (see
        ``redis_keys.script_args``), cached per window set (see ``bucket.by_identity``)."""
        return bucket.by_identity(self._wargs, windows, script_args)

    def _floors(self, key: str, windows: Sequence[WindowSpec]) -> list[str]:
        """The floors of ``key`` (``scripts.py``): the levels last seen here, if any."""
        seen = self.local.seen_raw(key, windows)
        if seen is None:
            return [""]
        return [repr(seen[0]), *seen[1]]

    def _fallback(self, key: str, windows: Sequence[WindowSpec], amount: int, now: float,
                  group: str | None) -> ReserveResult:
        if self._on_error == "open":
            return self.local.reserve(key, windows, amount, now, group)
        return ReserveResult(False, None, self._closed_retry, (), degraded=True,
                             backend="none")

    # -- BudgetState ---------------------------------------------------------------------
    async def reserve(self, key: str, windows: Sequence[WindowSpec], amount: int,
                      now: float | None = None, *, group: str | None = None) -> ReserveResult:
        return (await self.reserve_many([(key, windows, amount)], now, group=group))[0]

    async def reserve_many(self, asks: Sequence[_Ask], now: float | None = None, *,
                           group: str | None = None) -> list[ReserveResult]:
        """Every ask in one script call when they share a group (one hash slot); without a
        group each key is its own slot and the calls run concurrently."""
        if now is None:
            now = self._clock()
        if group is None and len(asks) > 1:
            parts = await asyncio.gather(*(self.reserve_many([a], now) for a in asks))
            return [p[0] for p in parts]
        rid = f"{self._rid_prefix}{next(self._rid_seq):x}"
        keys: list[str] = []
        args = [repr(float(now)), self._ttl, rid, str(len(asks))]
        plans = []
        for key, windows, amount in asks:
            if amount < 0:
                raise ValueError(f"amount must be >= 0, got {amount!r}")
            ws, wargs = self._windows(windows)
            kb, kx = self.keys_of(key, group)
            keys += (kb, kx)
            args.append(str(amount))
            args += wargs
            args += self._floors(key, ws)
            plans.append((key, ws, amount, kb, kx))
        try:
            res = await self._run(self._reserve_s, keys, args)
        except _Unavailable:
            return [self._fallback(k, ws, a, now, group) for k, ws, a, _, _ in plans]
        out = []
        for (key, ws, amount, kb, kx), r in zip(plans, res, strict=True):
            raw = r[3:]
            self.local.observe(key, ws, raw, now)
            states = tuple(bucket.state_of(w, float(u)) for w, u in zip(ws, raw, strict=True))
            if not int(r[0]):
                out.append(ReserveResult(False, None, float(r[2]), states,
                                         never_fits=bool(int(r[1]))))
                continue
            self._hold(rid, kb, kx)
            out.append(ReserveResult(True, Reservation(rid, key, ws, amount, now, group), 0.0,
                                     states))
        return out

    def _hold(self, rid: str, kb: str, kx: str) -> None:
        held = self._open
        held[(rid, kb)] = (kb, kx)
        if len(held) > self._max_pending:
            del held[next(iter(held))]
        if not self._renewing:
            self._renewing = True
            self._spawn(self._renew_loop())

    async def commit(self, reservation: Reservation, actual: int, now: float | None = None) -> bool:
        """Replace the reserved amount by ``actual``. True if applied; False if already
        settled or unknown, or Redis was unavailable (then it is sent once Redis answers
        again; the hold stays meanwhile). Any replica may settle a reservation, once."""
        return (await self.settle_many([(reservation, actual)], now))[0]

    async def release(self, reservation: Reservation, now: float | None = None) -> bool:
        return await self.commit(reservation, 0, now)

    async def settle_many(self, items: Sequence[tuple[Reservation, int]],
                          now: float | None = None) -> list[bool]:
        """Settle several reservations (one script call per hash slot)."""
        if now is None:
            now = self._clock()
        out = [False] * len(items)
        shared: dict[str | None, list[tuple[int, Reservation, int]]] = {}
        for i, (res, actual) in enumerate(items):
            if actual < 0:
                raise ValueError(f"actual must be >= 0, got {actual!r}")
            if self.local.owns(res):
                out[i] = self.local.settle(res, actual, now)
                self.debts.charge(res.key, res.group, self.local.origin(res.windows), actual)
                continue
            tag = res.group if res.group is not None else res.key
            shared.setdefault(tag, []).append((i, res, actual))
        if len(self.debts) and self.breaker.closed and not self._flushing:
            self._spawn(self._flush())  # e.g. after a single failed call
        if len(shared) == 1:
            for i, ok in await self._settle_group(next(iter(shared.values())), now):
                out[i] = ok
        elif shared:
            for part in await asyncio.gather(*(self._settle_group(g, now)
                                               for g in shared.values())):
                for i, ok in part:
                    out[i] = ok
        return out

    async def _settle_group(self, group: list[tuple[int, Reservation, int]], now: float
                            ) -> list[tuple[int, bool]]:
        keys: list[str] = []
        args = [repr(float(now)), self._ttl, str(len(group))]
        for _, res, actual in group:
            keys += self.keys_of(res.key, res.group)
            args += (res.id, str(actual))
            args += self._windows(res.windows)[1]
        try:
            reply = await self._run(self._settle_s, keys, args)
        except _Unavailable:
            for _, r, actual in group:
                self.debts.settle(r, actual)  # the hold stays (renewed) until sent
            return [(i, False) for i, _, _ in group]
        for j, (_, r, _) in enumerate(group):
            self._open.pop((r.id, keys[2 * j]), None)
        return [(i, bool(int(x))) for (i, _, _), x in zip(group, reply, strict=True)]

    async def adjust(self, key: str, windows: Sequence[WindowSpec], tokens: int,
                     now: float | None = None, *, group: str | None = None) -> bool:
        """Charge ``tokens`` more (negative: give back) outside any reservation (CHARGE);
        never below 0. False when Redis is unavailable: a charge is sent later, a refund is
        dropped (the cluster keeps paying: fails safe)."""
        ws, wargs = self._windows(windows)
        args = [repr(float(self._clock() if now is None else now)), self._ttl, str(tokens),
                *wargs, *self._floors(key, ws)]
        try:
            await self._run(self._charge_s, list(self.keys_of(key, group)), args)
        except _Unavailable:
            self.debts.charge(key, group, ws, tokens)
            return False
        return True

    async def peek(self, key: str, windows: Sequence[WindowSpec], now: float | None = None, *,
                   group: str | None = None) -> tuple[WindowState, ...]:
        """Current window states; empty tuple when Redis is unavailable."""
        ws, wargs = self._windows(windows)
        if now is None:
            now = self._clock()
        try:
            res = await self._run(self._peek_s, list(self.keys_of(key, group)),
                                  [repr(float(now)), self._ttl, "1", *wargs])
        except _Unavailable:
            return ()
        return tuple(bucket.state_of(w, float(u)) for w, u in zip(ws, res[0], strict=True))

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await self._runner.close()
        if self._r is not None:
            await self._r.aclose()
