"""The linker's compact per-account state (clusters/linker.py): evidence members and the
union-find of linked accounts."""

from __future__ import annotations

from collections import OrderedDict

from .scoring import Why

__all__ = ["Members", "Seen", "UnionFind", "held", "unpack"]

# The accounts seen with one evidence value, compact: a value seen with one account (most
# exits) is the pair ``(account, seen)``; from the second account on, an OrderedDict account
# -> seen (least recently seen first). ``seen`` is the last time (a number) or, for a sighting
# through a flagged network, ``(time, True)``: no tuple per ordinary sighting.
Seen = float | tuple[float, bool]
Members = tuple[str, Seen] | OrderedDict[str, Seen]


def held(members: Members) -> int:
    """How many accounts a value holds."""
    return 1 if members.__class__ is tuple else len(members)


def unpack(m: Seen) -> tuple[float, bool]:
    """(last seen, through a flagged network)."""
    return m if m.__class__ is tuple else (m, False)  # type: ignore[return-value]


class UnionFind:
    """Accounts linked in one epoch: parent pointers, cluster sizes, why-records (the pair
    that linked each linked account, LRU-bounded by the linker's ``max_why``)."""

    __slots__ = ("clusters", "parent", "size", "why")

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}
        self.why: OrderedDict[str, Why] = OrderedDict()
        self.clusters = 0  # roots of more than one account

    def find(self, x: str) -> str:
        parent = self.parent
        p = parent.get(x)
        if p is None:
            return x
        while p != x:
            gp = parent.get(p, p)
            if gp != p:
                parent[x] = gp  # path halving
            x = gp
            p = parent.get(x, x)
        return x
