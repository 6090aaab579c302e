"""Tokens a budget counts (pure): for a reservation (input estimate + output allowance) and
for a real usage, with the budget's weights, `count` and model multiplier. Rounding is
tolerant of float noise (`ceil_tokens`, `floor_tokens`). Used by the budget step and the
batch arithmetic."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..apis.usage import Usage
    from ..policy.budget_model import BudgetDef

__all__ = ["EPS", "ceil_tokens", "charge_amount", "floor_tokens", "reserve_amount"]

EPS = 1e-9


def ceil_tokens(x: float) -> int:
    return max(0, math.ceil(x - EPS))


def floor_tokens(x: float) -> int:
    return math.floor(x + EPS)


def reserve_amount(b: BudgetDef, input_est: int, output: int, model: str | None) -> int:
    """Tokens reserved by budget ``b`` for an input estimate and an output allowance."""
    total = 0.0
    if b.count != "output":
        total += b.w_input * input_est
    if b.count != "input":
        total += b.w_output * output
    return ceil_tokens(total * b.multiplier(model))


def charge_amount(b: BudgetDef, usage: Usage, model: str | None) -> int:
    """Tokens charged by budget ``b`` for a real ``apis.Usage``."""
    total = 0.0
    if b.count != "output":
        total += (b.w_input * usage.input_tokens + b.w_cache_read * usage.cache_read_input_tokens
                  + b.w_cache_creation * usage.cache_creation_input_tokens)
    if b.count != "input":
        total += b.w_output * usage.output_tokens
    return ceil_tokens(total * b.multiplier(model))
