"""Token budgets per cluster: continuous-refill token buckets, several windows per budget
reserved all-or-nothing, reserve before forwarding and reconcile after.

- spec.py: value types and the `BudgetState` backend interface;
- bucket.py: the bucket arithmetic both backends share;
- step.py: the pure budget step (which budgets apply, amounts, refusals, headers);
- driver.py: runs the step against a backend (the only awaits of the budget path);
- backends.py: the one factory of backends (memory.py, redis_state.py) and link stores.

The backends are imported on first use, so importing this package (or ``budgets.spec``)
loads neither redis nor cachetools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spec import BudgetState, Reservation, ReserveResult, WindowSpec, WindowState

if TYPE_CHECKING:
    from .memory import MemoryBudgetState
    from .redis_state import RedisBudgetState

__all__ = [
    "BudgetState",
    "MemoryBudgetState",
    "RedisBudgetState",
    "Reservation",
    "ReserveResult",
    "WindowSpec",
    "WindowState",
]


def __getattr__(name: str) -> Any:
    """The backends, imported on first use (PEP 562)."""
    if name == "MemoryBudgetState":
        from .memory import MemoryBudgetState as value
    elif name == "RedisBudgetState":
        from .redis_state import RedisBudgetState as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
