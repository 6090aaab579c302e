"""Pure token-bucket math shared by the backends (the Redis Lua scripts mirror it).

A window's state is a *level* ``u`` (tokens in use, 0 = full bucket) and the time ``t`` it
was last written.  Refill is continuous: ``u(now) = max(0, u - (now - t) * limit/period)``.
A request of ``amount`` fits when ``u + amount <= limit`` (with a tiny epsilon against float
rounding).  Levels above ``limit`` (negative remaining) happen only when a commit charges
more than was reserved; they drain at the normal rate.

If ``now < t`` (clocks of two replicas disagree) nothing is refilled and ``t`` is kept, so
a lagging replica can never refill the same interval twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .spec import WindowSpec, WindowState

EPS = 1e-9


def refill(level: float, ts: float, now: float, rate: float) -> tuple[float, float]:
    """Level and timestamp after refilling from ``ts`` to ``now``."""
    if now > ts:
        level -= (now - ts) * rate
        if level < 0.0:
            level = 0.0
        return level, now
    return level, ts


def wait_for(level: float, amount: float, limit: int, rate: float) -> float:
    """Seconds until ``amount`` fits in a window of ``limit`` refilling at ``rate`` per
    second, at ``level`` (0 if it fits now: ``level + amount <= limit``, within EPS)."""
    excess = level + amount - limit
    if excess <= EPS:
        return 0.0
    return excess / rate


def never_fits_retry(windows: Sequence[WindowSpec], amount: float) -> float | None:
    """Longest period among windows whose limit is below ``amount``, or None if all could fit."""
    periods = [w.period_s for w in windows if amount > w.limit]
    return max(periods) if periods else None


def window_state(name: str, limit: int, rate: float, level: float) -> WindowState:
    return WindowState(name, limit, limit - level, level / rate if level > 0 else 0.0)


def state_of(w: WindowSpec, level: float) -> WindowState:
    return window_state(w.name, w.limit, w.rate, level)


def ttl_s(period_s: float, rate: float, level: float) -> float:
    """How long a window's state must be kept: at least the period, longer when the level
    is above the limit (an overcharge takes longer than one period to drain)."""
    drain = level / rate
    return drain if drain > period_s else period_s


def by_identity[T](cache: dict[int, tuple[Any, T]], obj: Any, build: Callable[[Any], T]) -> T:
    """``build(obj)``, computed once per object and cached by identity: the rules hand the
    backends the same windows tuple on every request, and hashing it would run Python
    ``__hash__`` for every ``WindowSpec``.  The entry holds ``obj``, so its id stays unique;
    the cache is dropped if it ever grows past 1,024 entries."""
    hit = cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    value = build(obj)
    if len(cache) >= 1024:
        cache.clear()
    cache[id(obj)] = (obj, value)
    return value


def check_request(windows: Sequence[WindowSpec], amount: float) -> tuple[WindowSpec, ...]:
    ws = tuple(windows)
    if not ws:
        raise ValueError("at least one WindowSpec is required")
    if len({w.name for w in ws}) != len(ws):
        raise ValueError("window names must be unique within a budget")
    if amount < 0:
        raise ValueError(f"amount must be >= 0, got {amount!r}")
    return ws
