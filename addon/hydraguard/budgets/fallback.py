"""What a replica does while the shared (Redis) budget state is unavailable.

- `LocalShare`: this replica's share of every budget, in a `MemoryBudgetState`. Each
  window is scaled to ``limit // replicas`` (at least 1) tokens with the same period, so N
  replicas that each spend their share stay within the budget together. A budget key the
  replica has seen on Redis starts from that level: the local level is raised to at least
  ``last shared level / replicas`` (refilled since it was seen), so the replicas share
  what was *left* rather than a fresh budget each.
- `Debts`: what Redis still has to be told once it answers again: the real usage of
  requests served from the local share (charged to the shared bucket in full) and settles
  of shared holds that failed (replayed). Bounded; beyond the bound the oldest entries are
  dropped (counted in ``dropped``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import bucket
from .memory import MemoryBudgetState
from .spec import Reservation, ReserveResult, WindowSpec

__all__ = ["Debts", "LocalShare"]


def _scale(windows: Sequence[WindowSpec], replicas: int) -> tuple[WindowSpec, ...]:
    return tuple(WindowSpec(w.name, max(1, w.limit // replicas), w.period_s) for w in windows)


class LocalShare:
    """This replica's 1/``replicas`` share of every budget (see module doc)."""

    def __init__(self, replicas: int, clock: Callable[[], float], *,
                 max_keys: int = 100_000) -> None:
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        self.replicas = replicas
        self._clock = clock
        self._max_keys = max_keys
        self.memory = MemoryBudgetState(max_keys, clock)
        # windows -> (scaled windows); scaled windows -> the windows they came from
        self._scaled: dict[int, tuple[object, tuple[WindowSpec, ...]]] = {}
        self._origin: dict[int, tuple[object, tuple[WindowSpec, ...]]] = {}
        # budget key -> (when, level per window as Redis wrote it, windows) last seen on the
        # shared state; a dict in write order, the least recently written dropped first (a
        # cachetools LRU costs ~1 µs more per request)
        self._seen: dict[str, tuple[float, tuple[Any, ...], tuple[WindowSpec, ...]]] = {}

    def scaled(self, windows: Sequence[WindowSpec]) -> tuple[WindowSpec, ...]:
        """The local windows of a budget's windows (cached per windows object)."""
        def build(ws: Sequence[WindowSpec]) -> tuple[WindowSpec, ...]:
            local = _scale(ws, self.replicas)
            bucket.by_identity(self._origin, local, lambda _: tuple(ws))
            return local

        return bucket.by_identity(self._scaled, windows, build)

    def origin(self, local: Sequence[WindowSpec]) -> tuple[WindowSpec, ...]:
        """The budget's windows of local (scaled) windows."""
        hit = self._origin.get(id(local))
        if hit is not None and hit[0] is local:
            return hit[1]
        return tuple(WindowSpec(w.name, w.limit * self.replicas, w.period_s) for w in local)

    def observe(self, key: str, windows: tuple[WindowSpec, ...], levels: Sequence[Any],
                now: float) -> None:
        """The shared level per window of ``key`` (numbers, or their text as Redis sent it)
        after a shared operation at ``now``."""
        seen = self._seen
        seen.pop(key, None)
        seen[key] = (now, tuple(levels), windows)
        if len(seen) > self._max_keys:
            del seen[next(iter(seen))]

    def seen_raw(self, key: str, windows: Sequence[WindowSpec]
                 ) -> tuple[float, tuple[Any, ...]] | None:
        """(when, level per window as observed) of ``key`` last seen on the shared state, if
        it was seen with windows of the same names."""
        hit = self._seen.get(key)
        if hit is None:
            return None
        ts, levels, seen_ws = hit
        if seen_ws is not windows and [w.name for w in seen_ws] != [w.name for w in windows]:
            return None
        return ts, levels

    def seen(self, key: str, windows: Sequence[WindowSpec]
             ) -> tuple[float, tuple[float, ...]] | None:
        """Like ``seen_raw``, the levels as floats."""
        hit = self.seen_raw(key, windows)
        return None if hit is None else (hit[0], tuple(float(u) for u in hit[1]))

    def reserve(self, key: str, windows: Sequence[WindowSpec], amount: int, now: float,
                group: str | None = None) -> ReserveResult:
        """Reserve from the local share; the answer is marked degraded, backend "local"."""
        local = self.scaled(windows)
        seen = self.seen(key, windows)
        if seen is not None:
            ts, levels = seen
            self.memory.raise_levels(key, local, [u / self.replicas for u in levels], ts, now)
        r = self.memory.reserve_nowait(key, local, amount, now, group=group)
        r.degraded = True
        r.backend = "local"
        return r

    def owns(self, reservation: Reservation) -> bool:
        return self.memory.owns(reservation)

    def settle(self, reservation: Reservation, actual: int, now: float) -> bool:
        return self.memory.settle_nowait(reservation, actual, now)

    def reset(self) -> None:
        """Forget the local levels (Redis is back and is told what they spent, so the next
        outage starts from the shared levels seen then). Open local reservations can still
        be settled (their usage still goes to Redis)."""
        self.memory.forget_levels()


class Debts:
    """Usage and settles Redis still has to be told (see module doc)."""

    def __init__(self, max_items: int = 10_000) -> None:
        self.max_items = max_items
        # (key, group) -> [windows, tokens]: usage served from the local share
        self.charges: dict[tuple[str, str | None], list] = {}
        # (reservation id, key) -> (reservation, actual): failed settles of shared holds
        self.settles: dict[tuple[str, str], tuple[Reservation, int]] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.charges) + len(self.settles)

    def charge(self, key: str, group: str | None, windows: tuple[WindowSpec, ...],
               tokens: int) -> None:
        if tokens <= 0:
            return
        entry = self.charges.get((key, group))
        if entry is None:
            self._room(self.charges)
            self.charges[(key, group)] = [windows, tokens]
        else:
            entry[0], entry[1] = windows, entry[1] + tokens

    def settle(self, reservation: Reservation, actual: int) -> None:
        k = (reservation.id, reservation.key)
        if k not in self.settles:
            self._room(self.settles)
        self.settles[k] = (reservation, actual)

    def _room(self, d: dict) -> None:
        if len(self) >= self.max_items and d:
            del d[next(iter(d))]
            self.dropped += 1
