"""Template matching that survives slot variation: MinHash + banded LSH over word 3-shingles.

What is fingerprinted is what the caller writes: the user turn (the last one), from a floor of
`min_words` words (8) up. The system prompt is only a qualifier: a prompt matches a template
when its user turn is similar (estimated Jaccard >= `threshold`, 0.3) AND its system prompt
is similar to the template's (a 16-value MinHash, >= `system_threshold`; both empty counts as
similar). So users of one tool (one long shared system prompt, their own questions) stay
apart, while a fleet with a shared persona and slot-varied user turns matches. With
text="user" the system prompt is ignored; with text="system" it is the content instead.
A match also needs about `min_shared` (8) shingles in common, or near-identity (J >= 0.6):
short generic phrasing ("What is the difference between a X and a Y?") does not match.

Clusters: a template keeps up to `max_reps` (8) representative signatures (a match less
similar than 0.6 to all of them is added), so slot variety widens it within bounds. A prompt
that matches two templates merges the younger into the older (reps up to `max_reps`,
accounts). Template id "t-<16 hex>" = blake2b of the first signature (and qualifier) of the
oldest member: stable while the template lives. Memory: at most `max_templates` templates
(least recently seen dropped; ~3.1 KB for a one-prompt template, mostly its 32 index
entries), `max_reps` signatures; its accounts in a `sketch.Members` (exact up to 32 accounts
in the window, a HyperLogLog estimate above, ~7-9 % error; at most ~1.3 KB whatever their
number), the count saturating at `max_accounts_per_template`; at most 8 templates per band key.

Normalisation and signatures: signals/minhash.py.
"""

from __future__ import annotations

import hashlib
import time
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
from cachetools import LRUCache

from .minhash import BANDS, SYS_K, K, _minhash, _packed, _shingles, signature
from .sketch import TICKS_PER_S, Members, h64, ticks

__all__ = ["TemplateMatcher"]

Clock = Callable[[], float]

FEW_CANDIDATES = 8  # up to this many, every template sharing a band is verified
MAX_CANDIDATES = 32  # verified per prompt at most (those sharing the most bands)
MAX_PER_KEY = 8  # templates indexed under one band key (more: a hub of common phrasing)
ADD_BELOW = 0.6  # a match less similar than this to every rep becomes a rep; at least this
# similar, short texts match without `min_shared` shared shingles

# --- matcher ---------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Template:
    tid: str
    born: int
    system: np.ndarray | None  # qualifier signature (None: no system prompt / not used)
    last_seen: float
    reps: np.ndarray  # (n, K) uint32 representative signatures
    sizes: list[int]  # shingles of each rep
    accounts: Members = field(default_factory=Members)  # exact up to 32, then a sketch


class TemplateMatcher:
    """Groups prompts into templates; counts distinct accounts per template in a window.

    observe(system_text, user_text, account) -> (template id or None, distinct accounts).
    Templates idle for `window_s` are dropped, at most `max_templates` are kept (least
    recently seen dropped first), at most `max_accounts_per_template` accounts each (the
    count saturates there). Pure CPU, no I/O; the clock is injected.
    """

    def __init__(
        self,
        window_s: float = 3600.0,
        max_templates: int = 10_000,
        max_accounts_per_template: int = 1_000,
        clock: Clock = time.monotonic,
        *,
        threshold: float = 0.3,
        system_threshold: float = 0.3,
        max_reps: int = 8,
        min_words: int = 8,
        min_shared: int = 8,
        max_chars: int = 2048,
        text: str = "both",
    ) -> None:
        if text not in ("both", "user", "system"):
            raise ValueError("text must be 'both', 'user' or 'system'")
        self.window = float(window_s)
        self.max_templates = max(1, int(max_templates))
        self.max_accounts = max(1, int(max_accounts_per_template))
        self.threshold = float(threshold)
        self.system_threshold = float(system_threshold)
        self.max_reps = max(1, int(max_reps))
        self.min_words = max(1, int(min_words))
        self.min_shared = max(0, int(min_shared))
        self.max_chars = int(max_chars)
        self.text = text
        self._clock = clock
        self._origin = clock() - 1.0
        self._window_ticks = ticks(self.window)
        self._templates: OrderedDict[str, _Template] = OrderedDict()  # least recent first
        # band key -> the born number of the one template there, or those of several packed
        # in bytes (array "Q"): no references to objects, so the GC does not walk the index
        self._index: list[dict[int, int | bytes]] = [{} for _ in range(BANDS)]
        self._live: dict[int, _Template] = {}  # born number -> template
        self._systems: LRUCache[tuple[int, int], np.ndarray | None] = LRUCache(maxsize=1024)
        self._born = 0

    def __len__(self) -> int:
        return len(self._templates)

    # -- index ------------------------------------------------------------------------------
    def _link(self, t: _Template, keys: list[int]) -> None:
        index = self._index
        b = t.born
        found = list(map(dict.setdefault, index, keys, repeat(b)))  # new keys -> t
        for i in [i for i, v in enumerate(found) if v != b]:  # keys of other templates
            v = found[i]
            if type(v) is bytes:
                if len(v) < MAX_PER_KEY * 8 and b not in array("Q", v):  # a full key is a
                    index[i][keys[i]] = v + array("Q", (b,)).tobytes()  # hub: says little
            else:
                index[i][keys[i]] = array("Q", (v, b)).tobytes()

    def _unlink(self, t: _Template, keys: list[int]) -> None:
        index = self._index
        b = t.born
        found = list(map(dict.pop, index, keys, repeat(None)))
        for i in [i for i, v in enumerate(found) if v != b]:  # shared, or not there
            v = found[i]
            if type(v) is bytes:
                members = array("Q", v)
                if b in members:
                    members.remove(b)
                index[i][keys[i]] = members[0] if len(members) == 1 else members.tobytes()
            elif v is not None:
                index[i][keys[i]] = v

    def _drop(self, t: _Template) -> None:
        del self._templates[t.tid]
        del self._live[t.born]
        for rep in t.reps:
            self._unlink(t, rep.view("<u8").tolist())

    def _candidates(self, keys: list[int]) -> list[_Template]:
        """Templates sharing a band with `keys`; at most MAX_CANDIDATES, most bands first."""
        found = list(filter(None, map(dict.get, self._index, keys)))  # (born numbers >= 1)
        if not found:
            return []
        flat: list[int] = []
        for v in found:
            if type(v) is bytes:
                flat.extend(array("Q", v))
            else:
                flat.append(v)
        live = self._live
        if len(flat) <= FEW_CANDIDATES:
            return list(map(live.__getitem__, dict.fromkeys(flat)))
        hits = Counter(flat)  # bands shared, per template
        if len(hits) <= FEW_CANDIDATES:
            return list(map(live.__getitem__, hits))
        # a crowded neighbourhood (many weakly similar texts): two bands needed, at most
        # MAX_CANDIDATES of them (P(2 of 32 bands) is 0.80 at J = 0.3, 0.96 at J = 0.4)
        strong = [b for b, h in hits.items() if h >= 2]
        if len(strong) > MAX_CANDIDATES:
            strong = [b for b, _ in hits.most_common(MAX_CANDIDATES)]
        return list(map(live.__getitem__, strong))

    # -- qualifier --------------------------------------------------------------------------
    def _system_sig(self, system: str) -> np.ndarray | None:
        if not system:
            return None
        head = system[:4096]
        key = (len(head), hash(head))  # local cache only: the salted hash() never leaves
        try:
            return self._systems[key]
        except KeyError:
            pass
        sig = signature(head, 0, SYS_K)
        self._systems[key] = sig
        return sig

    def _system_ok(self, a: np.ndarray | None, b: np.ndarray | None) -> bool:
        if a is None or b is None:
            return False
        return np.count_nonzero(a == b) >= self.system_threshold * SYS_K

    # -- observe ----------------------------------------------------------------------------
    def _expire(self, cutoff: float) -> None:
        templates = self._templates
        while templates:
            t = next(iter(templates.values()))
            if t.last_seen >= cutoff:
                break
            self._drop(t)

    def observe(
        self, system_text: str | None, user_text: str | None, account: str | None
    ) -> tuple[str | None, int]:
        """Record one prompt; return (template id, distinct accounts of it in the window).

        (None, 0) when the fingerprinted text has fewer than `min_words` words.
        """
        system = system_text if isinstance(system_text, str) else ""
        user = user_text if isinstance(user_text, str) else ""
        content = system if self.text == "system" else user
        packed = _packed(content, self.max_chars) if content else b""
        if len(packed) < 8 * self.min_words:
            return None, 0
        qualifier = self._system_sig(system) if self.text == "both" else None
        shingles = _shingles(packed)
        n = len(shingles)
        sig = _minhash(shingles)
        keys = sig.view("<u8").tolist()  # ROWS == 2: one 64-bit key per band (as in _drop)
        now = self._clock()
        self._expire(now - self.window)

        matched, best_eq = self._verify(self._candidates(keys), sig, n, qualifier)
        if not matched:
            t = self._new(sig, n, keys, qualifier, now)
        else:
            t = matched[0]  # the oldest; the others merge into it
            for other in matched[1:]:
                self._merge(t, other)
            if best_eq < ADD_BELOW * K and len(t.reps) < self.max_reps:
                t.reps = np.vstack((t.reps, sig))
                t.sizes.append(n)
                self._link(t, keys)
            t.last_seen = now
            self._templates.move_to_end(t.tid)
        return t.tid, self._count(t, account, now)

    def _verify(self, candidates: list[_Template], sig: np.ndarray, n: int,
                qualifier: np.ndarray | None) -> tuple[list[_Template], int]:
        """Candidates that match (oldest first) and the best number of equal values."""
        if qualifier is None:  # only templates without a qualifier match
            ok = [t for t in candidates if t.system is None]
        else:  # templates of one system prompt share its (cached) qualifier array
            same: dict[int, bool] = {}
            ok = []
            for t in candidates:
                s = t.system
                if s is not qualifier:
                    if s is None:
                        continue
                    good = same.get(id(s))  # (every candidate lives through this call)
                    if good is None:
                        good = same[id(s)] = self._system_ok(qualifier, s)
                    if not good:
                        continue
                ok.append(t)
        if not ok:
            return [], -1
        # one comparison over every rep of every candidate: numpy calls cost more than data
        reps = ok[0].reps if len(ok) == 1 else np.concatenate([t.reps for t in ok])
        eqs = (reps == sig).sum(axis=1)
        hits = np.flatnonzero(eqs >= self.threshold * K).tolist()
        if not hits:
            return [], -1
        owners = [(t, size) for t in ok for size in t.sizes]
        matched: dict[_Template, None] = {}
        best_eq = -1
        for j in hits:
            t, size = owners[j]
            eq = int(eqs[j])
            # shared shingles estimated from J = eq / K: |A & B| = J / (1 + J) * (|A| + |B|);
            # short texts need near-identity instead
            if eq >= ADD_BELOW * K or eq * (n + size) >= self.min_shared * (K + eq):
                matched[t] = None
                best_eq = max(best_eq, eq)
        return sorted(matched, key=lambda t: t.born), best_eq

    def _new(self, sig: np.ndarray, n: int, keys: list[int], qualifier: np.ndarray | None,
             now: float) -> _Template:
        h = hashlib.blake2b(sig.tobytes(), digest_size=8, person=b"hydraguard-tpl")
        if qualifier is not None:
            h.update(qualifier.tobytes())
        tid = "t-" + h.hexdigest()
        same = self._templates.get(tid)
        if same is not None:  # (only on a 64-bit collision: an equal signature matches)
            self._drop(same)
        while len(self._templates) >= self.max_templates:
            self._drop(next(iter(self._templates.values())))
        self._born += 1
        t = _Template(tid, self._born, qualifier, now, sig[None, :].copy(), [n])
        self._templates[tid] = t
        self._live[t.born] = t
        self._link(t, keys)
        return t

    def _merge(self, keep: _Template, other: _Template) -> None:
        """Fold `other` (younger) into `keep`: its reps while there is room, its accounts."""
        self._drop(other)
        room = self.max_reps - len(keep.reps)
        if room > 0:
            keep.reps = np.vstack((keep.reps, other.reps[:room]))
            keep.sizes.extend(other.sizes[:room])
            for rep in other.reps[:room]:
                self._link(keep, rep.view("<u8").tolist())
        keep.accounts.merge(other.accounts, self._tick(), self._window_ticks, self.max_accounts)

    def _tick(self) -> int:
        return int((self._clock() - self._origin) * TICKS_PER_S)

    def _count(self, t: _Template, account: str | None, now: float) -> int:
        tick = int((now - self._origin) * TICKS_PER_S)
        if account is None:
            return t.accounts.count(tick, self._window_ticks, self.max_accounts)
        return t.accounts.add(h64(account), tick, self._window_ticks, self.max_accounts)

    def accounts(self, template_id: str) -> int:
        """Distinct accounts of a template in the window (0 if unknown)."""
        t = self._templates.get(template_id)
        if t is None:
            return 0
        return t.accounts.count(self._tick(), self._window_ticks, self.max_accounts)
