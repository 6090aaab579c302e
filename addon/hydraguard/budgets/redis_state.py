"""Budget state shared by all proxy replicas through Redis.

- Reserve/commit/release run as Lua scripts (EVALSHA through ``redis_scripts.ScriptRunner``,
  reloaded automatically after a Redis restart), so replicas never read-then-write.
- Keys: ``{prefix}:v1:{<cluster key>}:b`` (one hash for all windows of the key: fields
  ``<window>:u`` level and ``<window>:t`` timestamp) and ``{prefix}:v1:{<cluster
  key>}:r:<reservation id>`` (reserved amount). ``v1`` is ``LAYOUT_VERSION``: every key
  (links included) starts with ``{prefix}:v<LAYOUT_VERSION>:``. The rule: a change to what a
  key holds or how it is named bumps the version; replicas of the old and the new layout
  then use disjoint keys, so a rolling update never lets one replica misread the other's
  state (while both run, each layout enforces its own budget levels: the old keys expire by
  their TTLs once the last old replica is gone). The braces are a Redis Cluster hash tag:
  every key of one cluster lives in one slot, so a script may touch all of them. Every key
  carries a TTL (bucket hash: ≥ longest period + 1 s, longer while an overcharge drains;
  reservation keys: ``reservation_ttl_s``). Cluster keys containing braces/whitespace or
  longer than 200 chars are replaced by a hash.
- Time is *not* Redis server time: ``now`` comes from the injected clock (default
  ``time.time``) and is passed to the scripts.  Replicas therefore need synchronised
  clocks (NTP); a replica whose clock lags never refills twice (see ``bucket.py``), one
  that runs ahead refills early by its skew.
- Every operation is bounded by ``timeout_ms``.  On error/timeout the backend is "down":
  ``on_error="open"`` answers ``ok=True, degraded=True`` (nothing stored),
  ``"closed"`` answers ``ok=False, degraded=True, retry_after_s=closed_retry_after_s``.
  While down, Redis is skipped for ``down_backoff_s`` and every request is answered at
  once; after that the next operation tries again (reconnecting).  One log line is written
  to ``hydraguard.state`` per transition (healthy→down, down→healthy), never per request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import bucket, scripts
from .redis_scripts import LuaScript, ScriptRunner
from .spec import Reservation, ReserveResult, WindowSpec, WindowState

__all__ = ["LAYOUT_VERSION", "RedisBudgetState", "StateUnavailable"]

LAYOUT_VERSION = 2  # of the Redis key layout (module doc); bump on any change of layout

log = logging.getLogger("hydraguard.state")

_SAFE_KEY = re.compile(r"[^{}\s]{1,200}")


def _safe(part: str) -> str:
    """Key part without braces/whitespace (hash tag safety), bounded length."""
    if _SAFE_KEY.fullmatch(part):
        return part
    return "#" + blake2b(part.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _script_args(windows: Sequence[WindowSpec]) -> tuple[tuple[WindowSpec, ...], list[str]]:
    """The validated windows and the scripts' window arguments (see ``scripts.py``): n, the
    2n hash fields, then ``limit, period`` per window."""
    ws = bucket.check_request(windows, 0)
    out = [str(len(ws))]
    for w in ws:
        out += (f"{w.name}:u", f"{w.name}:t")
    for w in ws:
        out += (str(w.limit), repr(float(w.period_s)))
    return ws, out


class _Unavailable(Exception):
    pass


StateUnavailable = _Unavailable  # public name: Redis down or slow (see RedisBudgetState.call)


class RedisBudgetState:
    """``BudgetState`` backed by Redis (see module doc)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "hg",
        timeout_ms: float = 50,
        on_error: Literal["open", "closed"] = "open",
        clock: Callable[[], float] = time.time,
        reservation_ttl_s: float = 3600.0,
        down_backoff_s: float = 1.0,
        closed_retry_after_s: float = 1.0,
        client: aioredis.Redis | None = None,
        max_connections: int = 64,
    ) -> None:
        if on_error not in ("open", "closed"):
            raise ValueError(f"on_error must be 'open' or 'closed', got {on_error!r}")
        self._prefix = _safe(prefix)
        self._keyspace = f"{self._prefix}:v{LAYOUT_VERSION}"
        self._timeout_s = timeout_ms / 1000.0
        self._on_error = on_error
        self._clock = clock
        self._rttl_ms = str(max(1, round(reservation_ttl_s * 1000)))
        self._backoff_s = down_backoff_s
        self._closed_retry = closed_retry_after_s
        self.url = redact_url(url)  # for log lines: never the password
        if client is None:
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
        self._down = False
        self._skip_until = 0.0
        # reservation ids: unique across replicas (random per process) and cheap per request
        self._rid_prefix = os.urandom(6).hex()
        self._rid_seq = itertools.count(1)
        self._wargs: dict[int, tuple[Any, tuple[tuple[WindowSpec, ...], list[str]]]] = {}

    # -- health --------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return not self._down

    def _mark_down(self, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self._backoff_s
        if not self._down:
            self._down = True
            log.warning(
                "budget state DOWN: redis %s unavailable (%s: %s); on_error=%s, retrying every %gs",
                self.url,
                type(exc).__name__,
                exc,
                self._on_error,
                self._backoff_s,
            )

    def _mark_up(self) -> None:
        if self._down:
            self._down = False
            log.info("budget state RECOVERED: redis %s healthy again", self.url)

    async def _run(self, script: LuaScript, keys: list[str], args: list[str]):
        if self._down and time.monotonic() < self._skip_until:
            raise _Unavailable
        try:
            async with asyncio.timeout(self._timeout_s):
                res = await self._runner.run(script, keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._mark_down(exc)
            raise _Unavailable from exc
        if self._down:
            self._mark_up()
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
        """Run a registered script with this backend's timeout and health tracking; raises
        StateUnavailable when Redis is down or slow."""
        return await self._run(script, keys, args)

    # -- keys ----------------------------------------------------------------------------
    def _keys(self, key: str, rid: str) -> list[str]:
        base = f"{self._keyspace}:{{{_safe(key)}}}:"
        return [f"{base}b", f"{base}r:{rid}"]

    def _windows(self, windows: Sequence[WindowSpec]) -> tuple[tuple[WindowSpec, ...], list[str]]:
        """The windows as a tuple, validated once, and their script arguments (see
        ``_script_args``), cached per window set (see ``bucket.by_identity``)."""
        return bucket.by_identity(self._wargs, windows, _script_args)

    def _degraded(self) -> ReserveResult:
        if self._on_error == "open":
            return ReserveResult(True, None, 0.0, (), degraded=True)
        return ReserveResult(False, None, self._closed_retry, (), degraded=True)

    # -- BudgetState ---------------------------------------------------------------------
    async def reserve(
        self,
        key: str,
        windows: Sequence[WindowSpec],
        amount: int,
        now: float | None = None,
    ) -> ReserveResult:
        if amount < 0:
            raise ValueError(f"amount must be >= 0, got {amount!r}")
        ws, wargs = self._windows(windows)
        if now is None:
            now = self._clock()
        rid = f"{self._rid_prefix}{next(self._rid_seq):x}"
        try:
            res = await self._run(
                self._reserve_s,
                self._keys(key, rid),
                [repr(float(now)), str(amount), self._rttl_ms, *wargs],
            )
        except _Unavailable:
            return self._degraded()
        ok, never, retry = int(res[0]), int(res[1]), float(res[2])
        states = tuple(bucket.state_of(w, float(u)) for w, u in zip(ws, res[3:], strict=True))
        if not ok:
            return ReserveResult(False, None, retry, states, never_fits=bool(never))
        return ReserveResult(True, Reservation(rid, key, ws, amount, now), 0.0, states)

    async def commit(self, reservation: Reservation, actual: int, now: float | None = None) -> bool:
        """Replace the reserved amount by ``actual``.  True if applied; False if already
        settled, expired, or Redis was unavailable (the reservation then stays charged
        until its window refills: fails safe)."""
        if actual < 0:
            raise ValueError(f"actual must be >= 0, got {actual!r}")
        if now is None:
            now = self._clock()
        _, wargs = self._windows(reservation.windows)
        try:
            res = await self._run(
                self._settle_s,
                self._keys(reservation.key, reservation.id),
                [repr(float(now)), str(actual), "0", *wargs],
            )
        except _Unavailable:
            return False
        return bool(int(res))

    async def release(self, reservation: Reservation, now: float | None = None) -> bool:
        return await self.commit(reservation, 0, now)

    async def peek(
        self, key: str, windows: Sequence[WindowSpec], now: float | None = None
    ) -> tuple[WindowState, ...]:
        """Current window states; empty tuple when Redis is unavailable."""
        ws, wargs = self._windows(windows)
        if now is None:
            now = self._clock()
        keys = self._keys(key, "-")[:1]
        try:
            res = await self._run(
                self._peek_s, keys, [repr(float(now)), "0", "0", *wargs]
            )
        except _Unavailable:
            return ()
        return tuple(bucket.state_of(w, float(u)) for w, u in zip(ws, res, strict=True))

    async def close(self) -> None:
        await self._runner.close()
        await self._r.aclose()
