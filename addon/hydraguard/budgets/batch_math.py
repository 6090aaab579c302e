"""Budget arithmetic of batches (pure; the budget step and the batch settlement use it).

A batch is one `Ask` per budget, for the sum over the batch's models that the budget applies
to (its ``when`` is tested once per model, so mixing models cannot dodge a model's budget):

    sum over models m: ceil((w_in * input_m + w_out * outputs_m) * multiplier(m))

where ``outputs_m`` counts every output each request asks for in full (a missing cap counts
the budget's ``default_output``; ``max_output_reserve`` does not clamp a batch: nothing
settles it unless its results are read through the proxy). It is charged at submission.
Later, the batch's results settle it to what its requests really used (`exact_charge`), or a
batch that ended with requests unused (cancelled, expired, errored) gets back what those
requests were charged at least (`unused_refund`: the cheapest requests count, so it never
gives back more than was charged for them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..apis.batches import k_smallest
from ..facts import Facts, for_model
from .amounts import EPS, ceil_tokens, reserve_amount

if TYPE_CHECKING:
    from ..apis.batches import BatchSummary, ModelPart
    from ..apis.usage import Usage
    from ..policy.budget_model import BudgetDef

__all__ = ["covered", "exact_charge", "reserve_batch", "unused_refund"]

def covered(b: BudgetDef, definition: str, facts: Facts) -> tuple[ModelPart, ...]:
    """The parts (models) of the batch in ``facts`` that budget ``b`` applies to."""
    batch = facts.batch
    assert batch is not None
    if len(batch.parts) == 1:
        return batch.parts if b.applies(definition, facts) else ()
    return tuple(p for p in batch.parts if b.applies(definition, for_model(facts, p.model)))


def reserve_batch(b: BudgetDef, parts: Sequence[ModelPart], cap_to: int | None = None
                  ) -> tuple[int, int]:
    """(tokens to reserve, largest output cap asked for) of the ``parts`` a budget covers;
    every output capped at ``cap_to`` when given (``on_exceed: cap_max_tokens``)."""
    amount = largest = 0
    for p in parts:
        outputs = p.output_tokens(b.default_output, cap_to)
        amount += reserve_amount(b, p.input_tokens, outputs, p.model)
        for cap, _outs, _n in p.outputs:
            largest = max(largest, b.default_output if cap is None else cap)
    return amount, largest


def exact_charge(b: BudgetDef, usage: Mapping[str | None, Usage]) -> int:
    """What a budget charges for the real usage of the models it covered (by the batch's own
    model names: `apis.batches.part_of` maps the names the results give to them)."""
    total = 0
    for model, u in usage.items():
        in_w = 0.0
        if b.count != "output":
            in_w = (b.w_input * u.input_tokens + b.w_cache_read * u.cache_read_input_tokens
                    + b.w_cache_creation * u.cache_creation_input_tokens)
        out_w = b.w_output * u.output_tokens if b.count != "input" else 0.0
        total += ceil_tokens((in_w + out_w) * b.multiplier(model))
    return total


def unused_refund(b: BudgetDef, summary: BatchSummary, parts: Sequence[ModelPart],
                  unused: int) -> int:
    """A lower bound of what ``unused`` requests of the batch were charged by a budget that
    covered ``parts``: the ``unused`` smallest inputs plus, separately, the ``unused``
    smallest outputs over all its requests, at the smallest model multiplier. 0 unless the
    budget covered every request (else the unused ones might be requests it never charged)
    and the summary is exact (not ``coarse``)."""
    if unused <= 0 or not parts or summary.coarse or \
            sum(p.requests for p in parts) != summary.requests:
        return 0
    k = min(unused, summary.requests)
    d = b.default_output
    in_lb = k_smallest([v for p in parts for v in p.input_values()], k)
    out_lb = k_smallest([v for p in parts for v in p.output_values(d)], k)
    total = 0.0
    if b.count != "output":
        total += b.w_input * in_lb
    if b.count != "input":
        total += b.w_output * out_lb
    return math.floor(total * min(b.multiplier(p.model) for p in parts) + EPS)
