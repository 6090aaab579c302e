"""The SimHash template tracker hydraguard used before the MinHash matcher, kept only as the
baseline that bench/bench_templates.py and bench/bench_signals.py compare against."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]

# --- SimHash ---------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
# lower-cased text: ASCII punctuation -> space, digits deleted (so "order 12" == "order 7")
_NORM_TABLE = str.maketrans(
    {c: " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"} | {d: None for d in "0123456789"}
)
_WORD_CACHE: dict[str, bytes] = {}  # word -> 8-byte blake2b; shared, cleared when full
_WORD_CACHE_MAX = 200_000
_SHINGLE = 3
_ROT = (21, 42)


def normalise(text: str) -> list[str]:
    """Lower-cased words; ASCII punctuation splits words and digits are dropped."""
    return text.lower().translate(_NORM_TABLE).split()


def _word_hash(w: str) -> bytes:
    return hashlib.blake2b(w.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _packed_word_hashes(words: list[str]) -> bytes:
    cache = _WORD_CACHE
    try:
        return b"".join(map(cache.__getitem__, words))
    except KeyError:
        pass
    if len(cache) > _WORD_CACHE_MAX:
        cache.clear()
    new = {w: _word_hash(w) for w in set(words).difference(cache)}
    cache.update(new)
    return b"".join([cache.get(w) or _word_hash(w) for w in words])


class _Masks:
    """Lane masks for up to `lanes` 64-bit lanes (grown on demand, shared)."""

    lanes = 0
    lo: tuple[int, ...] = ()  # per rotation: the low `r` bits of every lane
    hi: tuple[int, ...] = ()  # per rotation: the high `64 - r` bits of every lane
    bits: tuple[int, ...] = ()  # per bit k of a byte: bit k of every byte (for byte columns)

    @classmethod
    def ensure(cls, lanes: int) -> None:
        if lanes <= cls.lanes:
            return
        lanes = max(lanes, 2 * cls.lanes, 64)
        lo, hi = [], []
        for r in _ROT:
            lane_lo = (1 << r) - 1
            lo.append(int.from_bytes(lane_lo.to_bytes(8, "little") * lanes, "little"))
            lane_hi = _MASK64 ^ lane_lo
            hi.append(int.from_bytes(lane_hi.to_bytes(8, "little") * lanes, "little"))
        cls.lo, cls.hi = tuple(lo), tuple(hi)
        cls.bits = tuple(int.from_bytes(bytes([1 << k]) * lanes, "little") for k in range(8))
        cls.lanes = lanes


def _rotl_lanes(x: int, r: int, i: int) -> int:
    # rotate every 64-bit lane left by r: low part moves up, the top r bits wrap to the bottom
    return ((x << r) & _Masks.hi[i]) | ((x >> (64 - r)) & _Masks.lo[i])


def simhash64(text: str, max_chars: int = 4096) -> int:
    """64-bit SimHash over 3-word shingles of the normalised first `max_chars` characters
    (all of it if `max_chars` <= 0). Stable across processes (blake2b word hashes).
    Texts of 1-2 words use the words themselves; no words gives 0.
    """
    if not isinstance(text, str) or not text:
        return 0
    words = normalise(text[:max_chars] if max_chars > 0 else text)
    n = len(words)
    if n == 0:
        return 0
    x = int.from_bytes(_packed_word_hashes(words), "little")
    _Masks.ensure(n)
    if n >= _SHINGLE:
        m = n - _SHINGLE + 1
        s = x
        for i in range(1, _SHINGLE):
            s ^= _rotl_lanes(x >> (64 * i), _ROT[i - 1], i - 1)
        s &= (1 << (64 * m)) - 1
    else:
        s, m = x, n
    data = s.to_bytes(8 * m, "little")
    bits = _Masks.bits
    cols = [int.from_bytes(data[j::8], "little") for j in range(8)]
    half = m / 2
    # bit 8*j + k of the result: majority of bit k of byte j over all shingle hashes
    flags = ["1" if (c & b).bit_count() > half else "0" for c in cols for b in bits]
    return int("".join(reversed(flags)), 2)


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


# --- Template tracking -----------------------------------------------------------------------


@dataclass(slots=True)
class _Template:
    rep: int
    last_seen: float
    accounts: OrderedDict[str, float] = field(default_factory=OrderedDict)


class TemplateTracker:
    """Groups near-duplicate long prompts into templates and counts distinct accounts per template.

    LSH: the 64-bit SimHash is split into `bands` bands; any template within `max_distance` bits
    shares at least one band exactly when bands > max_distance (pigeonhole), so candidates are
    found through per-band dicts and checked by Hamming distance. Templates idle for `window_s`
    are dropped; at most `max_templates` are kept (least recently seen evicted) and at most
    `max_accounts_per_template` accounts each (counts saturate there). Accounts are counted
    within the window.
    """

    def __init__(
        self,
        window_s: float = 3600.0,
        max_templates: int = 10_000,
        max_accounts_per_template: int = 1_000,
        bands: int = 4,
        max_distance: int = 3,
        clock: Clock = time.monotonic,
        min_chars: int = 200,
        max_chars: int = 4096,
    ) -> None:
        if bands < 1 or 64 % bands:
            raise ValueError("bands must divide 64")
        self.window = float(window_s)
        self.max_templates = max(1, int(max_templates))
        self.max_accounts = max(1, int(max_accounts_per_template))
        self.bands = bands
        self.max_distance = max_distance
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._clock = clock
        self._width = 64 // bands
        self._band_mask = (1 << self._width) - 1
        self._templates: OrderedDict[int, _Template] = OrderedDict()
        self._index: list[dict[int, list[int]]] = [{} for _ in range(bands)]

    def __len__(self) -> int:
        return len(self._templates)

    def _band_values(self, h: int) -> list[int]:
        w, m = self._width, self._band_mask
        return [(h >> (w * i)) & m for i in range(self.bands)]

    def _drop(self, rep: int) -> None:
        del self._templates[rep]
        for band, value in zip(self._index, self._band_values(rep), strict=True):
            reps = band.get(value)
            if reps is not None:
                reps.remove(rep)
                if not reps:
                    del band[value]

    def _find(self, h: int) -> int | None:
        if h in self._templates:
            return h
        best: tuple[int, int] | None = None
        for band, value in zip(self._index, self._band_values(h), strict=True):
            for rep in band.get(value, ()):
                d = (rep ^ h).bit_count()
                if d <= self.max_distance and (best is None or (d, rep) < best):
                    best = (d, rep)
        return None if best is None else best[1]

    def observe(self, text: str, account: str | None) -> tuple[str, int]:
        """Record `text` from `account`; return (template id, distinct accounts in the window).

        Texts shorter than `min_chars` are ignored: ("", 0). The id is the 16-hex-digit SimHash
        of the template's first text.
        """
        if not isinstance(text, str) or len(text) < self.min_chars:
            return "", 0
        now = self._clock()
        cutoff = now - self.window
        templates = self._templates
        while templates:  # expire idle templates (oldest first)
            rep, t = next(iter(templates.items()))
            if t.last_seen >= cutoff:
                break
            self._drop(rep)
        h = simhash64(text, self.max_chars)
        rep_found = self._find(h)
        if rep_found is None:
            if len(templates) >= self.max_templates:
                self._drop(next(iter(templates)))
            t = templates[h] = _Template(h, now)
            for band, value in zip(self._index, self._band_values(h), strict=True):
                band.setdefault(value, []).append(h)
        else:
            t = templates[rep_found]
            templates.move_to_end(rep_found)
            t.last_seen = now
        accounts = t.accounts
        if account is not None:
            if account in accounts:
                accounts.move_to_end(account)
            elif len(accounts) >= self.max_accounts:
                accounts.popitem(last=False)
            accounts[account] = now
        while accounts:
            a, seen = next(iter(accounts.items()))
            if seen >= cutoff:
                break
            del accounts[a]
        return f"{t.rep:016x}", len(accounts)

    def accounts(self, template_id: str) -> int:
        """Distinct accounts of a template in the window (0 if unknown)."""
        try:
            t = self._templates.get(int(template_id, 16))
        except ValueError:
            return 0
        if t is None:
            return 0
        cutoff = self._clock() - self.window
        return sum(1 for seen in t.accounts.values() if seen >= cutoff)
