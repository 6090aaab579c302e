"""Compact per-key records for the signal windows: an open-addressing hash table of
fixed-size slots held in typed arrays (no Python object per key).

A slot holds the key (a 64-bit hash from `sketch.h64`: two keys share a slot with odds of
about 1 in 10^7 at a million keys), when it was last touched (a 32-bit tick), and for each
*distinct field* one member inline (its 32-bit hash and last-seen tick); a field with a second
member moves to a `sketch.Members` kept in a side dict (exact up to 32 members, a windowed
HyperLogLog above). Optionally a *rate* (the sliding two-window count of
`behaviour.RateCounter`: window number and the counts of this window and the last).

Bytes per key: 8 (key) + 4 (touched) + 8 per distinct field + 16 for a rate, in a table at most
3/4 full, rebuilt (vectorised, without the dead keys) to at most half full: 2-4 slots per live
key, so a million keys take 2^21 slots. Keys idle for a whole window are dead: they count for
nothing and their slots are reused; over `max_keys` live keys the least recently touched
1/64 of them are dropped at once (one vectorised pass over the table).
"""

from __future__ import annotations

import mmap
from array import array
from collections.abc import Callable

import numpy as np

from .sketch import Members, ticks

__all__ = ["KeyTable"]

_EMPTY, _TOMB = 0, 1  # key values that are not keys (keys are forced >= 2)
_OVER = 0xFFFFFFFF  # inline tick of a field whose members live in the side dict
_MIN_CAP = 16


def _zeros(code: str, n: int) -> array | memoryview:
    """`n` zeros of type `code`; from 1 MiB up in their own anonymous mapping, so that the
    memory goes back to the system when a rebuilt table drops them (freed heap blocks of this
    size would stay in the process)."""
    size = array(code).itemsize * n
    if size < 1 << 20:
        return array(code, bytes(size))
    return memoryview(mmap.mmap(-1, size)).cast(code)


class KeyTable:
    """Records for at most `max_keys` live keys; see the module docstring."""

    def __init__(self, window_s: float, max_keys: int, fields: int, rate_window_s: float = 0,
                 clock: Callable[[], float] | None = None) -> None:
        assert clock is not None
        self.clock = clock
        self.origin = clock() - 1.0
        self.window = self.mwindow = ticks(window_s)  # key idle longer: dead; members
        self.rate_window = float(rate_window_s)
        if rate_window_s:  # a rate reads back two rate windows
            self.window = max(self.window, ticks(2 * rate_window_s))
        self.max_keys = max(1, int(max_keys))
        self.n_fields = fields
        self.side: list[dict[int, Members]] = [{} for _ in range(fields)]
        self._alloc(_MIN_CAP)
        self.used = 0  # slots with a key (live or dead), not tombstones
        self.tombs = 0
        self.live_hint = 0  # live keys at most (keys added, less those dropped; recounted)
        self._since_count = 0

    # -- storage --------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        self.cap = cap
        self.mask = cap - 1
        self.keys = _zeros("Q", cap)
        self.touch = _zeros("I", cap)
        self.mh = [_zeros("I", cap) for _ in range(self.n_fields)]  # inline member hash
        self.mt = [_zeros("I", cap) for _ in range(self.n_fields)]  # its tick, or _OVER
        if self.rate_window:
            self.r_idx = _zeros("I", cap)  # rate window number
            self.r_cur = _zeros("f", cap)
            self.r_prev = _zeros("f", cap)

    def now(self) -> int:
        """The current tick."""
        return int((self.clock() - self.origin) * 16)

    def __len__(self) -> int:
        """Live keys (touched within the window)."""
        keys = np.frombuffer(self.keys, dtype=np.uint64)
        touch = np.frombuffer(self.touch, dtype=np.uint32)
        return int(np.count_nonzero((keys > _TOMB) & (touch >= self.now() - self.window)))

    # -- lookup -----------------------------------------------------------------------------
    def find(self, key: int) -> int:
        """The slot of a live `key`, or -1."""
        keys, mask = self.keys, self.mask
        i = key & mask
        while True:
            k = keys[i]
            if k == key:
                return i if self.touch[i] >= self.now() - self.window else -1
            if k == _EMPTY:
                return -1
            i = (i + 1) & mask

    def slot(self, key: int, now: int) -> tuple[int, bool]:
        """(slot of `key`, created): the key's slot, touched now; a new one if it was not
        there or dead (its fields then empty)."""
        keys, mask, touch = self.keys, self.mask, self.touch
        cutoff = now - self.window
        i = key & mask
        free = -1
        while True:
            k = keys[i]
            if k == key:
                if touch[i] >= cutoff:
                    touch[i] = now
                    return i, False
                break  # its own slot, dead: reused below
            if k == _EMPTY:
                if free >= 0:
                    i = free
                elif (self.used + self.tombs + 1) * 4 > self.cap * 3:
                    self._rebuild(now)
                    return self.slot(key, now)
                else:
                    self.used += 1
                break
            if free < 0 and (k == _TOMB or touch[i] < cutoff):
                free = i  # reusable, once we know the key is not further on
            i = (i + 1) & mask
        k = keys[i]
        if k == _TOMB:
            self.tombs -= 1
            self.used += 1
        elif k != _EMPTY:
            self._clear(i)  # a dead key's slot
        self.live_hint += 1
        if self.live_hint > self.max_keys:
            self._make_room(now, i)
        keys[i] = key
        touch[i] = now
        return i, True

    def _make_room(self, now: int, keep: int) -> None:
        """Over `max_keys` live keys (counted again now and then: keys that died since make
        room too): drop one."""
        self._since_count += 1
        if self.cap <= 64 or self._since_count > self.max_keys // 16:
            self._since_count = 0
            self.live_hint = len(self) + 1
        if self.live_hint > self.max_keys:
            self._evict(now, keep)

    def _clear(self, i: int) -> None:
        key = self.keys[i]
        for f in range(self.n_fields):
            self.mh[f][i] = 0
            if self.mt[f][i] == _OVER:
                self.side[f].pop(key, None)
            self.mt[f][i] = 0
        if self.rate_window:
            self.r_idx[i] = 0
            self.r_cur[i] = self.r_prev[i] = 0.0

    def _evict(self, now: int, keep: int) -> None:
        """Drop the least recently touched 1/64 of `max_keys` live keys (at least one)."""
        npk = np.frombuffer(self.keys, dtype=np.uint64)
        npt = np.frombuffer(self.touch, dtype=np.uint32)
        live = (npk > _TOMB) & (npt >= now - self.window)
        live[keep] = False
        idx = np.flatnonzero(live)
        k = max(1, self.max_keys // 64)
        if len(idx) > k:
            idx = idx[np.argpartition(npt[idx], k - 1)[:k]]
        keys = self.keys
        for i in idx.tolist():
            self._clear(i)
            keys[i] = _TOMB
        self.used -= len(idx)
        self.tombs += len(idx)
        self.live_hint = int(np.count_nonzero(live)) + 1 - len(idx)
        self._since_count = 0

    def _rebuild(self, now: int) -> None:
        """Rehash the live keys into a table sized for them (dead keys and tombstones go)."""
        keys = np.frombuffer(self.keys, dtype=np.uint64)
        touch = np.frombuffer(self.touch, dtype=np.uint32)
        live = np.flatnonzero((keys > _TOMB) & (touch >= now - self.window))
        n = len(live)
        cap = _MIN_CAP
        while cap < 2 * (n + 1):  # at most half full after the rebuild
            cap *= 2
        old = (self.keys, self.touch, self.mh, self.mt,
               (self.r_idx, self.r_cur, self.r_prev) if self.rate_window else None)
        dead = set(keys[(keys > _TOMB) & (touch < now - self.window)].tolist())
        for f in range(self.n_fields):
            for k in dead & self.side[f].keys():
                del self.side[f][k]
        self._alloc(cap)
        pos = _places(keys[live], cap)
        self._copy(old[0], self.keys, live, pos, np.uint64)
        self._copy(old[1], self.touch, live, pos, np.uint32)
        for f in range(self.n_fields):
            self._copy(old[2][f], self.mh[f], live, pos, np.uint32)
            self._copy(old[3][f], self.mt[f], live, pos, np.uint32)
        if old[4] is not None:
            self._copy(old[4][0], self.r_idx, live, pos, np.uint32)
            self._copy(old[4][1], self.r_cur, live, pos, np.float32)
            self._copy(old[4][2], self.r_prev, live, pos, np.float32)
        self.used, self.tombs, self.live_hint = n, 0, n

    @staticmethod
    def _copy(src: array, dst: array, live: np.ndarray, pos: np.ndarray, dtype) -> None:
        np.frombuffer(dst, dtype=dtype)[pos] = np.frombuffer(src, dtype=dtype)[live]

    # -- distinct fields --------------------------------------------------------------------
    def add(self, i: int, f: int, key: int, h: int, now: int, cap: int) -> int:
        """Record member `h` in field `f` of slot `i` (key `key`); members in the window."""
        mh, mt = self.mh[f], self.mt[f]
        t = mt[i]
        window = self.mwindow
        if t == _OVER:
            return self.side[f][key].add(h, now, window, cap)
        m = h >> 32
        if t == 0 or mh[i] == m or t < now - window or cap == 1:
            mh[i] = m
            mt[i] = now
            return 1
        members = Members()  # a second member: the field moves to the side dict
        members.add(mh[i] << 32, t, window, cap)
        mt[i] = _OVER
        self.side[f][key] = members
        return members.add(h, now, window, cap)

    def count(self, i: int, f: int, key: int, now: int, cap: int) -> int:
        """Members of field `f` of slot `i` in the window."""
        t = self.mt[f][i]
        if t == _OVER:
            return self.side[f][key].count(now, self.mwindow, cap)
        return 1 if t and t >= now - self.mwindow else 0


def _places(keys: np.ndarray, cap: int) -> np.ndarray:
    """Linear-probing positions of distinct `keys` in an empty table of `cap` slots."""
    mask = np.uint64(cap - 1)
    pos = (keys & mask).astype(np.int64)
    out = np.full(len(keys), -1, dtype=np.int64)
    taken = np.zeros(cap, dtype=bool)
    todo = np.arange(len(keys))
    while len(todo):
        p = pos[todo]
        free = ~taken[p]
        # among the keys wanting one free slot, the first one gets it
        cand = todo[free]
        _, first = np.unique(p[free], return_index=True)
        win = cand[first]
        out[win] = pos[win]
        taken[pos[win]] = True
        lost = np.setdiff1d(todo, win, assume_unique=True)
        pos[lost] = (pos[lost] + 1) & (cap - 1)
        todo = lost
    return out
