"""Records that outlive a request: what a batch was charged (to settle it when its results
are read, maybe days later, maybe through another replica) and the estimate of an uploaded
batch input file (charged by the batch that names it).

A record is a JSON document plus, for a batch, the tokens each budget currently holds for
it (``nets``: budget id -> tokens) and whether it was settled exactly from its results.
`settle` moves the nets atomically and answers by how much each moved, so two replicas (or
two reads of the results) never give the same tokens back twice:

- ``mode="exact"``: the nets become the targets (the results say what the batch used); the
  record is marked exact;
- ``mode="lower"``: each net may only go down to its target (a refund for requests that were
  never run), and not at all once the record is exact.

Every record expires ``ttl`` seconds after it was written. `MemoryRecords` keeps them in
process (bounded, least recently written dropped first); `RedisRecords`
(redis_records.py) shares them between replicas.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["MemoryRecords", "Record", "RecordStore"]

Record = tuple[dict[str, Any], dict[str, int], bool]  # (document, nets, exact)


@runtime_checkable
class RecordStore(Protocol):
    """Where records live (see the module doc). Every method may answer None / False when the
    store is unavailable; callers fail safe (no refund, no estimate)."""

    async def put(self, key: str, doc: dict[str, Any], ttl: float,
                  nets: Mapping[str, int] | None = None) -> bool: ...

    async def get(self, key: str) -> Record | None: ...

    async def settle(self, key: str, targets: Mapping[str, int], mode: str
                     ) -> dict[str, int] | None: ...


def settle_nets(nets: dict[str, int], exact: bool, targets: Mapping[str, int], mode: str
                ) -> tuple[dict[str, int], bool]:
    """(moves, exact after): the rule of `RecordStore.settle` on plain values (``nets`` is
    updated in place)."""
    if mode not in ("exact", "lower"):
        raise ValueError(f"mode must be 'exact' or 'lower', got {mode!r}")
    moves: dict[str, int] = {}
    if mode == "lower" and exact:
        return moves, exact
    for budget, target in targets.items():
        old = nets.get(budget)
        if old is None:
            continue
        new = int(target) if mode == "exact" else min(old, int(target))
        nets[budget] = new
        moves[budget] = new - old
    return moves, exact or mode == "exact"


class MemoryRecords:
    """`RecordStore` in process memory: at most ``max_records`` (least recently written
    dropped first), each until its ttl."""

    def __init__(self, clock: Callable[[], float] = time.time, max_records: int = 100_000
                 ) -> None:
        self._clock = clock
        self.max_records = max_records
        self._items: OrderedDict[str, list[Any]] = OrderedDict()  # [expires, doc, nets, exact]

    def __len__(self) -> int:
        return len(self._items)

    def _live(self, key: str) -> list[Any] | None:
        item = self._items.get(key)
        if item is not None and item[0] <= self._clock():
            del self._items[key]
            return None
        return item

    def put_nowait(self, key: str, doc: dict[str, Any], ttl: float,
                   nets: Mapping[str, int] | None = None) -> bool:
        items = self._items
        items.pop(key, None)
        items[key] = [self._clock() + ttl, doc, dict(nets or {}), False]
        while len(items) > self.max_records:
            items.popitem(last=False)
        return True

    def get_nowait(self, key: str) -> Record | None:
        item = self._live(key)
        return None if item is None else (item[1], dict(item[2]), item[3])

    async def put(self, key: str, doc: dict[str, Any], ttl: float,
                  nets: Mapping[str, int] | None = None) -> bool:
        return self.put_nowait(key, doc, ttl, nets)

    async def get(self, key: str) -> Record | None:
        return self.get_nowait(key)

    async def settle(self, key: str, targets: Mapping[str, int], mode: str
                     ) -> dict[str, int] | None:
        item = self._live(key)
        if item is None:
            return None
        moves, item[3] = settle_nets(item[2], item[3], targets, mode)
        return moves
