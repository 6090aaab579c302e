"""The budget driver: runs the pure budget step (budgets/step.py) against a state backend.

The only awaits of the budget path live here: reserve before forwarding (one backend call
for every budget that applies, a second for ``cap_max_tokens`` retries), release what a
refusal does not keep, settle after the response (commit the real usage or release: one
backend call for all holds).
With a shared link store the linked cluster id is confirmed concurrently with the
reservation: the reservation goes ahead at once under the best id known here, and is moved
if the shared answer differs (a merge, or a replica that had not seen enough evidence).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..facts import ClusterRef, Facts
from . import step
from .history import AccountHistory
from .spec import BudgetState, Reservation, ReserveResult

if TYPE_CHECKING:
    from ..apis.usage import Usage
    from ..clusters.resolve import ClusterResolver
    from ..policy.budget_model import BudgetDef

log = logging.getLogger("hydraguard")

__all__ = ["Admission", "BudgetDriver"]


@dataclass(slots=True)
class Admission:
    """The budget step's outcome for one request, with the cluster it was charged to."""

    outcome: step.Outcome
    cluster: ClusterRef | None = None  # differs from facts.cluster_ref after a re-key
    settled: bool = False
    account: str | None = None  # for the probation history

    kind = "rate_limit"  # the error flavour of a budget refusal

    @property
    def refused(self) -> bool:
        return self.outcome.refused

    @property
    def rule(self) -> str:
        return self.outcome.rule

    @property
    def reason(self) -> str:
        return self.outcome.reason

    @property
    def retry_after_s(self) -> float | None:
        return self.outcome.retry_after_s

    @property
    def max_output_cap(self) -> int | None:
        return self.outcome.max_output_cap

    @property
    def degraded(self) -> bool:
        return self.outcome.degraded

    @property
    def headers(self) -> dict[str, str]:
        return self.outcome.headers

    @property
    def log(self) -> dict[str, object]:
        return self.outcome.log


class BudgetDriver:
    """Reserves and settles the budgets of one policy on one state backend."""

    def __init__(self, budgets: Sequence[BudgetDef], state: BudgetState | None,
                 clusters: ClusterResolver, clock: Callable[[], float],
                 history: AccountHistory | None = None) -> None:
        self.budgets = tuple(budgets)
        self.state = state
        self.clusters = clusters
        self.clock = clock
        self.history = history  # of accounts, when a probation budget needs it

    async def admit(self, facts: Facts) -> Admission:
        """Reserve tokens before forwarding. Never raises: a bug fails open and is logged
        as ``budget_error``."""
        ref = facts.cluster_ref
        if not self.budgets or ref is None or self.state is None:
            return Admission(step.Outcome(), ref)
        try:
            pending = self.clusters.confirm(facts, ref)
            adm = await self._reserve(facts, ref)
            if pending is not None:
                moved = self.clusters.rekey(ref, await pending)
                if moved is not None and moved.key != ref.key:
                    # merged meanwhile: charge the agreed cluster instead
                    await self._release([h.reservation for h in adm.outcome.holds])
                    adm = await self._reserve(facts, moved)
                elif moved is not None:  # same cluster: only the shared `link` answer is new
                    adm.cluster = moved
            return adm
        except Exception as e:  # a bug must not take the proxy down: fail open, say so
            log.exception("hydraguard: budget admission failed")
            out = step.Outcome(log={"budget_error": f"{type(e).__name__}: {e}"})
            return Admission(out, ref)

    async def _reserve(self, facts: Facts, ref: ClusterRef) -> Admission:
        state = self.state
        assert state is not None
        history, account = self.history, facts.account
        asks = step.plan(self.budgets, ref, facts, None if history is None else
                         lambda spec: history.established(account, spec))
        answers = await self._ask(asks)
        for i, (ask, answer) in enumerate(zip(asks, answers, strict=True)):
            retry = step.cap_retry(ask, answer, facts)
            if retry is not None:
                r2 = await state.reserve(retry.key, retry.budget.windows, retry.amount,
                                         group=retry.group)
                if r2.ok:
                    asks[i], answers[i] = retry, r2
        out = step.outcome(asks, answers, facts, self.clock())
        await self._release(out.release)
        return Admission(out, ref, account=account)

    async def _ask(self, asks: list[step.Ask]) -> list[ReserveResult]:
        """The budgets of one group (one cluster; a probation budget's network) in one backend
        call (on Redis: one hash slot, one script); the groups of a request concurrently."""
        state = self.state
        assert state is not None
        if not asks:
            return []
        groups: dict[str | None, list[int]] = {}
        for i, a in enumerate(asks):
            groups.setdefault(a.group, []).append(i)

        async def one(idx: list[int], group: str | None) -> list[ReserveResult]:
            return await state.reserve_many(
                [(asks[i].key, asks[i].budget.windows, asks[i].amount) for i in idx],
                group=group)

        if len(groups) == 1:
            (group, idx), = groups.items()
            return await one(idx, group)
        parts = await asyncio.gather(*(one(idx, g) for g, idx in groups.items()))
        out: list[ReserveResult | None] = [None] * len(asks)
        for idx, got in zip(groups.values(), parts, strict=True):
            for i, r in zip(idx, got, strict=True):
                out[i] = r
        return out  # type: ignore[return-value]

    async def _release(self, reservations: Sequence[Reservation | None]) -> None:
        state = self.state
        assert state is not None
        items = [(r, 0) for r in reservations if r is not None]
        if items:
            await state.settle_many(items)

    async def settle(self, admission: Admission, usage: Usage | None, *,
                     failed: bool) -> dict[str, object]:
        """Replace the reservations with the real usage (or release them), once. Returns the
        log fields of the budget step."""
        if not admission.settled and self.state is not None:
            admission.settled = True
            if self.history is not None and admission.account is not None and not failed \
                    and not admission.outcome.refused:
                self.history.served(admission.account, 0 if usage is None else
                                    usage.total_input + usage.output_tokens)
            items = []
            for h in admission.outcome.holds:
                actual = step.charge(h, usage, failed=failed)
                if h.reservation is not None:
                    items.append((h.reservation, actual))
            if items:
                await self.state.settle_many(items)
        return dict(admission.outcome.log)

    def budget(self, budget_id: str) -> BudgetDef | None:
        """The budget of this policy with that id (None: no longer defined)."""
        return next((b for b in self.budgets if b.id == budget_id), None)

    async def adjust(self, charges: Sequence[Mapping[str, object]], moves: Mapping[str, int]
                     ) -> dict[str, dict[str, object]]:
        """Move a batch's charges (its record's ``budget``, ``key``, ``group``) by ``moves``
        (negative: give back) in each budget's current windows. Returns, per budget id that
        could not be moved, why (logged with the settlement)."""
        out: dict[str, dict[str, object]] = {}
        for c in charges:
            bid = str(c["budget"])
            delta = int(moves.get(bid, 0))
            if not delta:
                continue
            b = self.budget(bid)
            if b is None or self.state is None:
                out[bid] = {"skipped": "budget no longer defined"}
                continue
            group = c.get("group")
            try:
                ok = await self.state.adjust(str(c["key"]), b.windows, delta,
                                             group=None if group is None else str(group))
            except Exception as e:  # never lose the log line
                log.exception("hydraguard: adjusting a batch charge failed")
                ok, out[bid] = False, {"skipped": f"{type(e).__name__}: {e}"}
            if not ok and bid not in out:
                out[bid] = {"skipped": "state unavailable"}
        return out
