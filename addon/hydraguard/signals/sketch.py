"""Distinct members of one key within a sliding window, in little memory.

`Members` holds the members exactly (a 32-bit hash and a last-seen tick each, in two
`array('I')`) up to `EXACT` (32) live members; beyond that it becomes a windowed HyperLogLog
(`Sketch`): `BUCKETS` (5) time buckets of `REGISTERS` (128) one-byte registers, each bucket a
quarter of the window. The count is then the HyperLogLog estimate of the union of the buckets
that overlap the window (members seen within the window, or up to a quarter window earlier),
with the small-range (linear counting) correction: about 7 % standard error from 33 to a
few hundred, 9 % (1.04 / sqrt(128)) above; bench/bench_signals.py measures it. The union
and its sums are kept up to date as members arrive (recomputed when a bucket ages out), so a
count costs a few arithmetic operations. A key whose members all left the window starts
exact again. Memory: ~250 bytes for a few members, ~500 bytes at most exact, ~1.3 KB as a
sketch, whatever the number of members.

Times are integer ticks (`TICKS_PER_S` per second, from the owner's clock origin); member
hashes come from `h64` (process-local: salted like `hash()`, never written anywhere); a member
is known by the top 32 bits of its hash.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

__all__ = ["BUCKETS", "EXACT", "REGISTERS", "TICKS_PER_S", "Members", "Sketch", "h64", "ticks"]

MASK64 = (1 << 64) - 1
TICKS_PER_S = 16
EXACT = 32
REGISTERS = 128
_P = 7  # log2(REGISTERS)
BUCKETS = 5
_ALPHA = 0.7213 / (1 + 1.079 / REGISTERS)
_INV_POW = [2.0 ** -k for k in range(66)]
_INV_NP = np.array(_INV_POW)
_GOLD = 0x9E3779B97F4A7C15
_F1, _F2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53
_LOW = (1 << (64 - _P)) - 1


def h64(x: object) -> int:
    """A well-mixed 64-bit hash (>= 2) of `x` for this process: `hash()` (salted per process
    for strings, so it never leaves it) mixed by a tuple hash, a multiplication and a shift,
    so that both its low bits (table slots) and its high bits (member ids) spread."""
    h = (hash((x, 0x5BD1E995)) * _GOLD) & MASK64
    h ^= h >> 29
    return h if h > 1 else h + 2


def ticks(seconds: float) -> int:
    """A duration in ticks (at least one)."""
    return max(1, int(seconds * TICKS_PER_S))


def _bucket(window: int) -> int:
    """Ticks per sketch bucket: a quarter of the window."""
    return max(1, -(-window // (BUCKETS - 1)))


class Sketch:
    """A windowed HyperLogLog of 32-bit member ids (see the module docstring)."""

    __slots__ = ("_e", "_epochs", "_inv", "_merged", "_regs", "_zeros")

    def __init__(self) -> None:
        self._regs = bytearray(BUCKETS * REGISTERS)  # ranks, one row per bucket
        self._epochs = [-BUCKETS] * BUCKETS  # bucket number held by each row
        self._merged = bytearray(REGISTERS)  # max over the rows live at bucket _e
        self._e = -1
        self._inv = float(REGISTERS)  # sum of 2^-merged
        self._zeros = REGISTERS

    def add(self, m: int, t: int, window: int) -> None:
        """Record member id `m` seen at tick `t`."""
        e = t // _bucket(window)
        if e > self._e:
            self._refresh(e)
        row = e % BUCKETS
        epochs = self._epochs
        if epochs[row] != e:
            if epochs[row] > e:  # from a bucket already reused (a merge of old data)
                return
            self._regs[row * REGISTERS : (row + 1) * REGISTERS] = bytes(REGISTERS)
            epochs[row] = e
        x = ((m ^ (m >> 16)) * _F1) & MASK64  # a full mix of the id (murmur3's finaliser)
        x = ((x ^ (x >> 33)) * _F2) & MASK64
        x = (x ^ (x >> 33)) or 1
        j = x >> (64 - _P)
        rank = 65 - _P - (x & _LOW).bit_length()
        i = row * REGISTERS + j
        regs = self._regs
        if regs[i] < rank:
            regs[i] = rank
            if e > self._e - BUCKETS:  # a row of the union
                old = self._merged[j]
                if old < rank:
                    self._merged[j] = rank
                    self._inv += _INV_POW[rank] - _INV_POW[old]
                    if old == 0:
                        self._zeros -= 1

    def merge(self, other: Sketch) -> None:
        """Register-wise maximum with `other`, bucket by bucket."""
        mine = np.frombuffer(self._regs, dtype=np.uint8).reshape(BUCKETS, REGISTERS)
        theirs = np.frombuffer(other._regs, dtype=np.uint8).reshape(BUCKETS, REGISTERS)
        for row, e in enumerate(other._epochs):
            if e > self._epochs[row]:
                mine[row] = theirs[row]
                self._epochs[row] = e
            elif e == self._epochs[row]:
                np.maximum(mine[row], theirs[row], out=mine[row])
        self._refresh(max(self._e, other._e))

    def _refresh(self, e: int) -> None:
        """Recompute the union for the buckets live at bucket number `e`."""
        self._e = e
        live = [row for row, b in enumerate(self._epochs) if e - BUCKETS < b <= e]
        regs = np.frombuffer(self._regs, dtype=np.uint8).reshape(BUCKETS, REGISTERS)
        merged = regs[live].max(axis=0) if live else np.zeros(REGISTERS, dtype=np.uint8)
        self._merged[:] = merged.tobytes()
        self._inv = float(_INV_NP[merged].sum())
        self._zeros = int(np.count_nonzero(merged == 0))

    def estimate(self, now: int, window: int) -> int:
        """Distinct members within the window (estimated)."""
        e = now // _bucket(window)
        if e > self._e:
            self._refresh(e)
        zeros = self._zeros
        if zeros == REGISTERS:
            return 0
        raw = _ALPHA * REGISTERS * REGISTERS / self._inv
        if raw <= 2.5 * REGISTERS and zeros:
            raw = REGISTERS * math.log(REGISTERS / zeros)
        return round(raw)


class Members:
    """Distinct members (64-bit hashes) seen within a window; see the module docstring."""

    __slots__ = ("_hashes", "_seen", "_sketch")

    def __init__(self) -> None:
        self._hashes = array("I")  # exact: member id (hash >> 32)
        self._seen = array("I")  # exact: last seen tick
        self._sketch: Sketch | None = None

    @property
    def exact(self) -> bool:
        """True while the members are held exactly."""
        return self._sketch is None

    def add(self, h: int, now: int, window: int, cap: int) -> int:
        """Record member hash `h` at tick `now`; return the members within `window` ticks
        (at most `cap`: with `cap` <= EXACT the oldest member makes room, as a bounded set)."""
        m = h >> 32
        if self._sketch is None:
            hashes = self._hashes
            if m in hashes:
                self._seen[hashes.index(m)] = now
            else:
                self._add_exact(m, now, now, window, cap)
            if self._sketch is None:
                return self._live(now - window, cap)
        sk = self._sketch
        assert sk is not None
        sk.add(m, now, window)
        return min(cap, self._sketch_count(now, window))

    def count(self, now: int, window: int, cap: int) -> int:
        """Members within `window` ticks of `now` (at most `cap`)."""
        if self._sketch is not None:
            return min(cap, self._sketch_count(now, window))
        return self._live(now - window, cap) if self._seen else 0

    def _live(self, cutoff: int, cap: int) -> int:
        """Exact members seen at or after `cutoff` (the others are dropped)."""
        if min(self._seen) < cutoff:
            self._purge(cutoff)
        return min(cap, len(self._seen))

    def merge(self, other: Members, now: int, window: int, cap: int) -> None:
        """Add the members of `other` (as they were seen) to these."""
        if other._sketch is None:
            for m, t in zip(other._hashes, other._seen, strict=True):
                if self._sketch is None:
                    self._add_exact(m, t, now, window, cap)
                if self._sketch is not None:
                    self._sketch.add(m, t, window)
            return
        if self._sketch is None:
            self._to_sketch(window)
        assert self._sketch is not None
        self._sketch.merge(other._sketch)

    def _add_exact(self, m: int, t: int, now: int, window: int, cap: int) -> None:
        """Add member id `m` seen at `t` to the exact set; past EXACT it becomes a sketch
        (which then still needs `m`: the caller adds it)."""
        hashes, seen = self._hashes, self._seen
        if t < now - window:
            return
        if m in hashes:
            i = hashes.index(m)
            if seen[i] < t:
                seen[i] = t
            return
        if len(hashes) >= min(cap, EXACT):
            self._purge(now - window)
            hashes, seen = self._hashes, self._seen
        if len(hashes) >= cap:  # a bounded exact set: the oldest member makes room
            i = seen.index(min(seen))
            if seen[i] >= t:
                return
            del hashes[i], seen[i]
        elif len(hashes) >= EXACT:
            self._to_sketch(window)
            return
        hashes.append(m)
        seen.append(t)

    def _purge(self, cutoff: int) -> None:
        keep = [i for i, t in enumerate(self._seen) if t >= cutoff]
        if len(keep) < len(self._seen):
            self._hashes = array("I", [self._hashes[i] for i in keep])
            self._seen = array("I", [self._seen[i] for i in keep])

    def _to_sketch(self, window: int) -> None:
        sk = Sketch()
        for m, t in zip(self._hashes, self._seen, strict=True):
            sk.add(m, t, window)
        self._sketch = sk
        self._hashes, self._seen = array("I"), array("I")

    def _sketch_count(self, now: int, window: int) -> int:
        sk = self._sketch
        assert sk is not None
        n = sk.estimate(now, window)
        if n == 0:  # every member left the window: exact again
            self._sketch = None
        return n
