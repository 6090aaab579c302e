"""Pair scores of hydra linking (pure arithmetic, shared by the memory linker and, line for
line, by the Redis script in link_script.py).

Two accounts that share evidence values accumulate a pair score, one part per *group* of
evidence: the network (``ip``, ``prefix``, ``asn``: nested, an exit, its /24 and its ASN
describe one place), ``tls_ua`` and ``template``:

- a shared value is worth ``w = weight * rarity`` (``flagged_weight`` when both accounts
  were seen with it through a flagged network), ``rarity = min(1, log10(max_accounts / n))``
  for the ``n`` accounts seen with the value in the window;
- a group counts its strongest value, plus a second, different value (at most the weaker of
  the two) when that one was shared within ``multi_exit_s`` of the group's previous credit
  and both accounts used it within ``multi_exit_s`` of each other (an operator rotating
  accounts through the same exits). At most two values of a group count; the same value again
  never adds; a /24 or ASN never adds to the exit inside it in the same request (the linker
  credits a candidate once per request for the most specific network value);
- a part whose last credit is older than the window is forgotten;
- the pair score is the sum of the parts, in `GROUPS` order; the accounts are linked when it
  reaches the threshold (``>= threshold - EPS``).
"""

from __future__ import annotations

import math

from ..policy.budget_model import EVIDENCE_KINDS, NETWORK_KINDS

__all__ = ["EPS", "GROUP", "GROUPS", "KINDS", "NETWORK", "Pair", "Why", "link_info", "rarity"]

KINDS = EVIDENCE_KINDS  # ip, prefix, asn, tls_ua, template: the order of scoring
NETWORK = NETWORK_KINDS
GROUPS = ("net", "tls_ua", "template")
GROUP = {k: ("net" if k in NETWORK else k) for k in KINDS}
_INDEX = {k: i for i, k in enumerate(KINDS)}
EPS = 1e-9


def rarity(n: int, max_accounts: int) -> float:
    """Weight factor of a value seen with ``n`` accounts: 1 up to a tenth of max_accounts,
    then falling with log10 to 0 at max_accounts."""
    r = math.log10(max_accounts / n)
    return 1.0 if r > 1.0 else r


_GI = tuple(GROUPS.index(GROUP[k]) for k in KINDS)  # group index of each kind (KINDS order)
_NK = len(KINDS)


class Pair(list):
    """The evidence two accounts share, as one compact list ``[part of GROUPS[0], part of
    GROUPS[1], part of GROUPS[2], flagged]``; a part is None or ``[best, bonus, last credit,
    v1, v2, count per kind...]``: the strongest single value, what a second value shared in a
    burst adds (at most the weaker of the two), the last two values credited (``kind:value``,
    so the same value never counts twice) and how many distinct values of each kind (KINDS
    order) were credited. ~90 bytes plus ~170 per group in use (no dict, no object per
    count)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__((None, None, None, False))

    @property
    def flagged(self) -> bool:
        return self[3]

    @flagged.setter
    def flagged(self, value: bool) -> None:
        self[3] = value

    def credit(self, kind: str, value: str, w: float, burst: bool, now: float, window: float,
               multi_s: float) -> float:
        """Add one shared value (``value`` is ``kind:value``); the pair score after it."""
        horizon = now - window
        ki = _INDEX[kind]
        g = _GI[ki]
        p = self[g]
        if p is None or p[2] < horizon:
            p = self[g] = [w, 0.0, now, value, None, 0, 0, 0, 0, 0]
            p[5 + ki] = 1
        else:
            if value != p[3] and value != p[4]:
                if burst and now - p[2] <= multi_s:
                    b = w if w < p[0] else p[0]
                    if b > p[1]:
                        p[1] = b
                p[5 + ki] += 1
                p[4] = p[3]
                p[3] = value
            if w > p[0]:
                p[0] = w
            p[2] = now
        return self.score(now, window)

    def score(self, now: float, window: float) -> float:
        """The pair score: the sum of the parts credited within the window (GROUPS order)."""
        horizon = now - window
        total = 0.0
        for q in self[:3]:
            if q is not None and q[2] >= horizon:
                total += q[0] + q[1]
        return total

    def counts(self, now: float, window: float) -> tuple[int, ...]:
        """Distinct values credited per kind (KINDS order) still inside the window."""
        horizon = now - window
        out = [0] * _NK
        for q in self[:3]:
            if q is not None and q[2] >= horizon:
                out = [a + b for a, b in zip(out, q[5:], strict=True)]
        return tuple(out)


# the why-record of a linked account: (via, score, counts per kind, flagged, time)
Why = tuple[str, float, tuple[int, ...], bool, float]


def link_info(size: int, why: Why | None, now: float) -> dict[str, object] | None:
    """The decision log's ``link`` object of a linked account (None when not linked): how many
    accounts its cluster has, and the pair that linked it (the other account, score, evidence
    kinds with how many values of each, whether through flagged networks, seconds ago)."""
    if size <= 1:
        return None
    out: dict[str, object] = {"members": size}
    if why is not None:
        via, score, counts, flagged, t = why
        out.update({
            "score": round(score, 3),
            "kinds": {k: c for k, c in zip(KINDS, counts, strict=True) if c},
            "flagged": flagged,
            "via": via,
            "age_s": round(max(0.0, now - t), 1),
        })
    return out


def encode_why(why: Why) -> str:
    """The why-record as the Redis script stores it (tab-separated)."""
    via, score, counts, flagged, t = why
    return "\t".join((via, f"{score:.17g}", ",".join(map(str, counts)),
                      "1" if flagged else "0", f"{t:.17g}"))


def decode_why(text: str) -> Why | None:
    """The inverse of `encode_why` (None for a malformed record)."""
    try:
        via, score, counts, flagged, t = text.split("\t")
        return (via, float(score), tuple(int(c) for c in counts.split(",")), flagged == "1",
                float(t))
    except ValueError:
        return None
