"""Value types and the backend protocol of the budget engine.

Everything here is plain data: no I/O, no mitmproxy.  Amounts are tokens; times are
seconds on the clock injected into the backend (``now`` arguments must come from that
same clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..policy.budget_model import WindowSpec  # rules data; re-exported here

__all__ = [
    "BudgetState",
    "Reservation",
    "ReserveResult",
    "WindowSpec",
    "WindowState",
]


# Per-request result types are plain (non-frozen) slotted dataclasses: building a frozen
# one costs ~4x more, and they are created on the hot path.  Treat them as immutable.


@dataclass(slots=True)
class WindowState:
    """State of one window after an operation.

    ``remaining`` is ``limit - level`` as a float; it is negative when commits charged more
    than was reserved (later requests then wait).  ``reset_s`` is the time until the bucket
    is full again (level back to 0).
    """

    name: str
    limit: int
    remaining: float
    reset_s: float


@dataclass(slots=True)
class Reservation:
    """A granted reservation; hand it to ``commit`` or ``release`` exactly once
    (further calls are no-ops)."""

    id: str
    key: str
    windows: tuple[WindowSpec, ...]
    amount: int
    created_at: float
    group: str | None = None  # keys of one group share one Redis hash slot (see reserve)


@dataclass(slots=True)
class ReserveResult:
    """Outcome of ``reserve``.

    - ``ok``: the amount fit in every window and was charged (``reservation`` set), or the
      backend is degraded with ``on_error="open"`` (``ok`` True, ``reservation`` None).
    - ``retry_after_s``: when ``ok`` is False, seconds until the tightest window could fit
      the amount (assuming no other traffic); for ``never_fits`` the longest period of the
      windows whose limit is below the amount.
    - ``never_fits``: the amount exceeds the limit of some window; it can never succeed.
    - ``degraded``: the shared state backend was unavailable; the answer follows
      ``on_error``: ``backend`` then names who answered: ``"local"`` (this replica's share
      of the budget, kept in memory: the answer is a real budget answer) or ``"none"``
      (fail-closed refusal).
    """

    ok: bool
    reservation: Reservation | None
    retry_after_s: float
    windows: tuple[WindowState, ...]
    never_fits: bool = False
    degraded: bool = False
    backend: str = ""


@runtime_checkable
class BudgetState(Protocol):
    """Backend protocol.  ``now=None`` means "ask the backend's clock".

    ``group``: keys reserved together (the budgets of one cluster) name the same group, so
    a shared backend can keep them in one place and reserve them in one step.
    ``reserve_many`` answers each ``(key, windows, amount)`` on its own, in order (one
    reservation id for all); ``settle_many`` commits each ``(reservation, actual)``
    (``actual`` 0 releases). ``adjust`` charges (negative: gives back) tokens outside any
    reservation, never below an empty bucket: a batch settled by its results long after it
    was charged."""

    async def reserve(
        self,
        key: str,
        windows: tuple[WindowSpec, ...] | list[WindowSpec],
        amount: int,
        now: float | None = None,
        *,
        group: str | None = None,
    ) -> ReserveResult: ...

    async def reserve_many(
        self,
        asks: Sequence[tuple[str, Sequence[WindowSpec], int]],
        now: float | None = None,
        *,
        group: str | None = None,
    ) -> list[ReserveResult]: ...

    async def commit(
        self, reservation: Reservation, actual: int, now: float | None = None
    ) -> bool: ...

    async def release(self, reservation: Reservation, now: float | None = None) -> bool: ...

    async def settle_many(
        self, items: Sequence[tuple[Reservation, int]], now: float | None = None
    ) -> list[bool]: ...

    async def adjust(
        self,
        key: str,
        windows: tuple[WindowSpec, ...] | list[WindowSpec],
        tokens: int,
        now: float | None = None,
        *,
        group: str | None = None,
    ) -> bool: ...

    async def peek(
        self,
        key: str,
        windows: tuple[WindowSpec, ...] | list[WindowSpec],
        now: float | None = None,
        *,
        group: str | None = None,
    ) -> tuple[WindowState, ...]: ...

    async def close(self) -> None: ...
