"""In-process budget state (one proxy replica).

Bounded by ``max_keys`` cluster keys and ``max_pending`` open reservations, each a
``cachetools.LRUCache`` (least recently used evicted first).  A key is also dead once all
its windows have refilled completely (at least the longest window period after the last
write): it then reads as absent and is dropped when next touched or evicted.  An evicted
key starts again with full buckets (lenient by design: eviction only happens under key
floods).  Expiry is checked against the ``now`` of each call (the injected clock) rather
than by cachetools' TTL caches, which cost ~4-8 µs per operation here against ~0.7 µs.

Every operation runs synchronously inside the coroutine, with no ``await`` between reading
and writing, so on a single asyncio loop each operation is atomic.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from cachetools import LRUCache

from . import bucket
from .spec import Reservation, ReserveResult, WindowSpec, WindowState

__all__ = ["MemoryBudgetState"]


class _KeyState:
    __slots__ = ("expires", "levels")

    def __init__(self) -> None:
        # window name -> [level, ts]
        self.levels: dict[str, list[float]] = {}
        self.expires = 0.0


class MemoryBudgetState:
    """``BudgetState`` kept in process memory.

    :param max_keys: cluster keys kept (LRU beyond that).
    :param clock: seconds; defaults to ``time.monotonic``.  ``now`` arguments must use it.
    :param max_pending: open reservations kept; :param reservation_ttl_s: how long an open
        reservation can still be committed/released.  A reservation dropped by either bound
        stays charged (fails safe: the budget is never over-spent because of it).
    """

    def __init__(
        self,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_pending: int = 100_000,
        reservation_ttl_s: float = 3600.0,
    ) -> None:
        if max_keys < 1 or max_pending < 1:
            raise ValueError("max_keys and max_pending must be >= 1")
        self.max_keys = max_keys
        self.max_pending = max_pending
        self.reservation_ttl_s = reservation_ttl_s
        self._clock = clock
        self._keys: LRUCache[str, _KeyState] = LRUCache(maxsize=max_keys)
        # reservation id -> (reservation, expires)
        self._pending: LRUCache[str, tuple[Reservation, float]] = LRUCache(maxsize=max_pending)
        self._ids = itertools.count(1)
        self._id_prefix = f"m{id(self):x}-"

    def __len__(self) -> int:
        """Number of live (unexpired) keys."""
        self.purge_expired()
        return len(self._keys)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def purge_expired(self, now: float | None = None) -> None:
        """Drop every expired key and reservation (O(n); otherwise they go when touched or
        evicted)."""
        if now is None:
            now = self._clock()
        for k in [k for k, st in self._keys.items() if st.expires <= now]:
            del self._keys[k]
        for rid in [r for r, (_, exp) in self._pending.items() if exp <= now]:
            del self._pending[rid]

    # -- internals ---------------------------------------------------------------------
    def _get(self, key: str, now: float) -> _KeyState | None:
        keys = self._keys
        st = keys.get(key)  # marks it most recently used
        if st is None:
            return None
        if st.expires <= now:
            del keys[key]
            return None
        return st

    def _levels(
        self, st: _KeyState | None, ws: Sequence[WindowSpec], now: float
    ) -> list[list[float]]:
        out = []
        levels = st.levels if st is not None else None
        for w in ws:
            cell = levels.get(w.name) if levels is not None else None
            if cell is None:
                out.append([0.0, now])
            else:
                lvl, ts = bucket.refill(cell[0], cell[1], now, w.rate)
                out.append([lvl, ts])
        return out

    def _store(
        self,
        key: str,
        st: _KeyState | None,
        ws: Sequence[WindowSpec],
        cells: list[list[float]],
        now: float,
    ) -> None:
        if st is None:
            st = _KeyState()
            self._keys[key] = st  # evicts the least recently used key when full
        keep = st.expires
        for w, cell in zip(ws, cells, strict=True):
            st.levels[w.name] = cell
            exp = now + bucket.ttl_s(w, cell[0])
            if exp > keep:
                keep = exp
        st.expires = keep  # never shortens the life of windows not touched by this call

    # -- BudgetState ---------------------------------------------------------------------
    async def reserve(
        self,
        key: str,
        windows: Sequence[WindowSpec],
        amount: int,
        now: float | None = None,
    ) -> ReserveResult:
        return self.reserve_nowait(key, windows, amount, now)

    def reserve_nowait(
        self, key: str, windows: Sequence[WindowSpec], amount: int, now: float | None = None
    ) -> ReserveResult:
        """Synchronous ``reserve`` (atomic by construction)."""
        ws = bucket.check_request(windows, amount)
        if now is None:
            now = self._clock()
        st = self._get(key, now)
        cells = self._levels(st, ws, now)
        pairs = tuple(zip(ws, cells, strict=True))
        never = bucket.never_fits_retry(ws, amount)
        if never is not None:
            states = tuple(bucket.state_of(w, c[0]) for w, c in pairs)
            return ReserveResult(False, None, never, states, never_fits=True)
        if not all(bucket.fits(c[0], amount, w.limit) for w, c in pairs):
            retry = max(bucket.wait_for(c[0], amount, w) for w, c in pairs)
            states = tuple(bucket.state_of(w, c[0]) for w, c in pairs)
            return ReserveResult(False, None, retry, states)
        for c in cells:
            c[0] += amount
        self._store(key, st, ws, cells, now)
        rid = f"{self._id_prefix}{next(self._ids)}"
        res = Reservation(rid, key, ws, amount, now)
        self._pending[rid] = (res, now + self.reservation_ttl_s)
        states = tuple(bucket.state_of(w, c[0]) for w, c in pairs)
        return ReserveResult(True, res, 0.0, states)

    async def commit(self, reservation: Reservation, actual: int, now: float | None = None) -> bool:
        return self.settle_nowait(reservation, actual, now)

    async def release(self, reservation: Reservation, now: float | None = None) -> bool:
        return self.settle_nowait(reservation, 0, now)

    def settle_nowait(
        self, reservation: Reservation, actual: int, now: float | None = None
    ) -> bool:
        """Replace the reserved amount by ``actual`` (0 = release).  True if applied, False if
        the reservation was already settled (or expired)."""
        if actual < 0:
            raise ValueError(f"actual must be >= 0, got {actual!r}")
        if now is None:
            now = self._clock()
        entry = self._pending.pop(reservation.id, None)
        if entry is None or entry[1] <= now:
            return False
        delta = actual - reservation.amount
        if delta == 0:
            return True
        ws = reservation.windows
        st = self._get(reservation.key, now)
        if st is None and delta < 0:
            return True  # nothing stored (evicted/expired): a refund changes nothing
        cells = self._levels(st, ws, now)
        for c in cells:
            c[0] += delta
            if c[0] < 0.0:
                c[0] = 0.0
        self._store(reservation.key, st, ws, cells, now)
        return True

    async def peek(
        self, key: str, windows: Sequence[WindowSpec], now: float | None = None
    ) -> tuple[WindowState, ...]:
        ws = bucket.check_request(windows, 0)
        if now is None:
            now = self._clock()
        st = self._get(key, now)
        cells = self._levels(st, ws, now)
        return tuple(bucket.state_of(w, c[0]) for w, c in zip(ws, cells, strict=True))

    async def close(self) -> None:
        self._keys.clear()
        self._pending.clear()
