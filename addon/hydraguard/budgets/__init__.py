"""Token budgets per cluster key: continuous-refill token buckets, several windows per
budget reserved all-or-nothing, reserve before forwarding and reconcile after.

Backends: ``MemoryBudgetState`` (one process) and ``RedisBudgetState`` (shared by
replicas); build one from a URI with ``make_budget_state``. The backends are imported on
first use, so importing this package (or ``budgets.spec``) loads neither redis nor cachetools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

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
    "make_budget_state",
]

_REDIS_SCHEMES = ("redis", "rediss", "unix")


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


def make_budget_state(url: str, **kw: Any) -> BudgetState:
    """Backend from a URI.

    - ``memory://`` (optionally ``memory://?max_keys=50000``) → ``MemoryBudgetState(**kw)``
    - ``redis://host:port/db``, ``rediss://…``, ``unix:///path?db=0`` →
      ``RedisBudgetState(url, **kw)`` (kw: prefix, timeout_ms, on_error, clock, …)
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from .memory import MemoryBudgetState

        q = parse_qs(urlsplit(url).query)
        if "max_keys" in q and "max_keys" not in kw:
            kw["max_keys"] = int(q["max_keys"][-1])
        return MemoryBudgetState(**kw)
    if scheme in _REDIS_SCHEMES:
        from .redis_state import RedisBudgetState

        return RedisBudgetState(url, **kw)
    raise ValueError(f"unsupported budget state URI {url!r} (use memory:// or redis://)")
