"""Token budgets per cluster key: continuous-refill token buckets, several windows per
budget reserved all-or-nothing, reserve before forwarding and reconcile after.

Backends: ``MemoryBudgetState`` (one process) and ``RedisBudgetState`` (shared by
replicas); build one from a URI with ``make_budget_state``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from .memory import MemoryBudgetState
from .redis_state import RedisBudgetState
from .spec import BudgetState, Reservation, ReserveResult, WindowSpec, WindowState

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


def make_budget_state(url: str, **kw: Any) -> BudgetState:
    """Backend from a URI.

    - ``memory://`` (optionally ``memory://?max_keys=50000``) → ``MemoryBudgetState(**kw)``
    - ``redis://host:port/db``, ``rediss://…``, ``unix:///path?db=0`` →
      ``RedisBudgetState(url, **kw)`` (kw: prefix, timeout_ms, on_error, clock, …)
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        q = parse_qs(urlsplit(url).query)
        if "max_keys" in q and "max_keys" not in kw:
            kw["max_keys"] = int(q["max_keys"][-1])
        return MemoryBudgetState(**kw)
    if scheme in _REDIS_SCHEMES:
        return RedisBudgetState(url, **kw)
    raise ValueError(f"unsupported budget state URI {url!r} (use memory:// or redis://)")
