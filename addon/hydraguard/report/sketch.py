"""Bounded counters for the report: memory stays flat however long the log is.

- `TopK`: heaviest keys by a weight (Space-Saving with bulk eviction). Exact while fewer than
  ``2 * cap`` distinct keys were seen; past that each entry carries an error bound.
- `Distinct`: number of distinct values (K-minimum-values sketch): exact up to ``k`` values,
  an estimate (about 1/sqrt(k) relative error) past that.
- `TimeBuckets`: counts per time bucket and series; the bucket width grows along a ladder of
  round widths so that at most ``max_buckets`` buckets span the data.

Standard library only.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MAX_KEY_CHARS = 120  # longer keys are cut (bounded memory per key; labels stay readable)


def clip_key(key: str) -> str:
    """A key cut to MAX_KEY_CHARS (with an ellipsis)."""
    return key if len(key) <= MAX_KEY_CHARS else key[: MAX_KEY_CHARS - 1] + "…"


@dataclass(slots=True)
class Entry:
    """One tracked key. The key's true weight lies in ``[weight - err, weight]``."""

    weight: float = 0.0
    err: float = 0.0

    @property
    def low(self) -> float:
        """The guaranteed part of the weight (``weight - err``): the truth is at least this."""
        return self.weight - self.err


class TopK[E: Entry]:
    """The heaviest keys by weight, holding at most ``2 * cap`` entries.

    When the table grows past ``2 * cap`` it keeps the ``cap`` heaviest entries. A key that
    arrives later starts at the heaviest weight ever evicted (``floor``) with that as its
    error: the Space-Saving bound, so a reported weight never understates the truth and
    ``weight - err`` never overstates it. ``make`` builds an entry (an `Entry` subclass can
    carry more statistics)."""

    def __init__(self, cap: int, make: Callable[[], E] = Entry) -> None:  # type: ignore
        if cap < 1:
            raise ValueError("cap must be >= 1")
        self.cap = cap
        self._make = make
        self.items: dict[str, E] = {}
        self.floor = 0.0
        self.evicted = 0  # entries dropped so far (0: every weight is exact)

    def entry(self, key: str) -> E:
        """The entry of ``key``, created (at ``floor``) when new. Add to its weight."""
        e = self.items.get(key)
        if e is None:
            if len(self.items) >= 2 * self.cap:
                self._trim()
            e = self._make()
            e.weight = e.err = self.floor
            self.items[clip_key(key) if len(key) > MAX_KEY_CHARS else key] = e
        return e

    def add(self, key: str, weight: float = 1) -> None:
        """Add ``weight`` to ``key``."""
        self.entry(key).weight += weight

    def _trim(self) -> None:
        ranked = sorted(self.items.items(), key=lambda kv: kv[1].weight, reverse=True)
        keep, drop = ranked[: self.cap], ranked[self.cap:]
        self.floor = max(self.floor, max(e.weight for _, e in drop))
        self.evicted += len(drop)
        self.items = dict(keep)

    @property
    def exact(self) -> bool:
        """True while no key was ever evicted (every weight is the true one)."""
        return self.evicted == 0

    def top(self, n: int | None = None) -> list[tuple[str, E]]:
        """The ``n`` heaviest (all when None) by guaranteed weight (``low``), then by weight,
        then by key. While `exact`, that is simply by weight."""
        ranked = sorted(self.items.items(),
                        key=lambda kv: (-kv[1].low, -kv[1].weight, kv[0]))
        return ranked if n is None else ranked[:n]

    def total(self) -> float:
        """Sum of the tracked weights."""
        return sum(e.weight for e in self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)


def hash64(value: str) -> int:
    """A stable 64-bit hash (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogateescape"),
                                          digest_size=8).digest(), "big")


class Distinct:
    """Count of distinct values in at most ``k`` integers (K minimum values)."""

    __slots__ = ("_heap", "_seen", "k")

    def __init__(self, k: int = 256) -> None:
        self.k = k
        self._heap: list[int] = []  # negated: the largest kept hash on top
        self._seen: set[int] = set()

    def add(self, value: str) -> None:
        """Record one value."""
        h = hash64(value)
        if h in self._seen:
            return
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, -h)
            self._seen.add(h)
        elif h < -self._heap[0]:
            self._seen.discard(-heapq.heapreplace(self._heap, -h))
            self._seen.add(h)

    @property
    def exact(self) -> bool:
        """True while fewer than ``k`` distinct values were seen (the count is exact)."""
        return len(self._heap) < self.k

    def count(self) -> int:
        """The number of distinct values (an estimate once ``exact`` is False)."""
        if self.exact:
            return len(self._heap)
        return round((self.k - 1) * 2.0 ** 64 / (-self._heap[0] + 1))

    def __len__(self) -> int:
        return len(self._heap)


# Bucket widths in seconds; each divides the next, so buckets merge cleanly when they widen.
WIDTHS = (1, 2, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800,
          2419200, 29030400)


@dataclass
class TimeBuckets:
    """Counts per (bucket, series); buckets are aligned to multiples of ``width`` seconds
    since the epoch and widen (along WIDTHS) to keep the span within ``max_buckets``. At most
    ``max_series`` series are kept by name; later ones are counted as ``other``."""

    max_buckets: int = 240
    max_series: int = 12
    width: int = WIDTHS[0]
    buckets: dict[int, dict[str, int]] = field(default_factory=dict)
    series: list[str] = field(default_factory=list)
    lo: int | None = None  # smallest / largest bucket index seen
    hi: int | None = None

    def add(self, ts: float, name: str, n: int = 1) -> None:
        """Count ``n`` events of series ``name`` at time ``ts`` (epoch seconds)."""
        if name not in self.series:
            if len(self.series) >= self.max_series:
                name = "other"
            if name not in self.series:
                self.series.append(name)
        i = int(ts // self.width)
        lo = i if self.lo is None else min(self.lo, i)
        hi = i if self.hi is None else max(self.hi, i)
        while hi - lo + 1 > self.max_buckets and self.width != WIDTHS[-1]:
            self._widen()
            i, lo, hi = int(ts // self.width), self.lo, self.hi  # type: ignore[assignment]
            lo, hi = min(lo, i), max(hi, i)
        self.lo, self.hi = lo, hi
        b = self.buckets.setdefault(i, {})
        b[name] = b.get(name, 0) + n

    def _widen(self) -> None:
        old = self.width
        self.width = WIDTHS[WIDTHS.index(old) + 1]
        merged: dict[int, dict[str, int]] = {}
        for i, counts in self.buckets.items():
            b = merged.setdefault(i * old // self.width, {})
            for k, v in counts.items():
                b[k] = b.get(k, 0) + v
        self.buckets = merged
        assert self.lo is not None and self.hi is not None
        self.lo, self.hi = self.lo * old // self.width, self.hi * old // self.width

    def rows(self) -> list[tuple[float, dict[str, int]]]:
        """(bucket start in epoch seconds, counts per series) for every bucket from the first
        to the last, empty ones included, oldest first."""
        if self.lo is None or self.hi is None:
            return []
        return [(i * self.width, dict(self.buckets.get(i, {})))
                for i in range(self.lo, self.hi + 1)]
