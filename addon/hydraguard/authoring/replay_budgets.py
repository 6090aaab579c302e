"""`hydraguard replay --budgets`: re-run linking, probation and budgets over a decision log.

Every logged request is replayed in log order, at its logged time, against fresh in-memory
state built from the NEW rules: its cluster is resolved again (hydra linking sees the logged
client IP, signals and template id), the budget step reserves under the new budgets and
probation, and the logged usage settles the reservation. What a request would have used had
it been served is only known for requests that were served: a request the old rules refused
keeps its reservation as its charge (the estimate of what it asked for).

Not re-run: anything that needs the request itself (the User-Agent is not logged, so
JA4 + User-Agent link evidence is missing; bodies are never logged).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import refusals
from ..apis.usage import Usage
from ..budgets.backends import open_backends
from ..budgets.driver import BudgetDriver
from ..clusters.resolve import ClusterResolver
from ..decision import Decision
from ..facts import Facts
from ..gather import set_cluster
from ..policy import Policy
from ..policy.budget_model import StateConfig

__all__ = ["BudgetReplay", "ClusterRow"]


class _Clock:
    """The replay's clock: the logged time of the request being replayed."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _ts(rec: dict[str, Any], fallback: float) -> float:
    try:
        return datetime.fromisoformat(str(rec["ts"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return fallback


@dataclass
class ClusterRow:
    """One cluster of the new linking: its members and what it was served."""

    accounts: set[str] = field(default_factory=set)
    requests: int = 0
    refused_before: int = 0
    refused_after: int = 0
    tokens_before: int = 0  # served as logged
    tokens_after: int = 0  # served under the new rules (logged usage of requests still served)
    old_clusters: set[str] = field(default_factory=set)


class BudgetReplay:
    """Linking, probation and budgets of ``policy`` on in-memory state, at logged times."""

    def __init__(self, policy: Policy, *, max_clusters: int = 100_000) -> None:
        self.clock = _Clock()
        cfg = policy.budgets
        if cfg is not None and cfg.state.backend != "memory":
            cfg = dataclasses.replace(cfg, state=StateConfig())  # never touch a shared Redis
        self.backends = open_backends(cfg, self.clock)
        self.clusters = ClusterResolver(cfg.clusters if cfg else (), self.backends.links)
        self.driver = BudgetDriver(cfg.budgets if cfg else (), self.backends.state,
                                   self.clusters, self.clock, self.backends.history)
        self.rows: dict[str, ClusterRow] = defaultdict(ClusterRow)
        self.by_budget: Counter[str] = Counter()  # budget id -> refusals under the new rules
        self.max_clusters = max_clusters
        self._loop = asyncio.new_event_loop()

    def close(self) -> None:
        self._loop.run_until_complete(self.backends.close())
        self._loop.close()

    def step(self, facts: Facts, rec: dict[str, Any], decision: Decision) -> Decision:
        """The new decision for one logged request whose rules decision is ``decision``."""
        self.clock.t = _ts(rec, self.clock.t)
        set_cluster(facts, self.clusters.resolve(facts))
        new = decision
        served_before = rec.get("status") is not None and not rec.get("enforced", False) \
            and int(rec.get("status") or 0) < 400
        logged = int(rec.get("input_tokens") or 0) + int(rec.get("output_tokens") or 0)
        if not decision.enforced and facts.cluster_ref is not None:
            adm = self._loop.run_until_complete(self.driver.admit(facts))
            if adm.cluster is not None and adm.cluster is not facts.cluster_ref:
                set_cluster(facts, adm.cluster)
            out = adm.outcome
            if out.refused:
                new = refusals.by_budget(out.rule, out.reason, "rate_limit",
                                         out.retry_after_s, decision.shadow_rules)
                self.by_budget[out.rule] += 1
            usage = Usage(int(rec.get("input_tokens") or 0),
                          int(rec.get("output_tokens") or 0)) if served_before else None
            self._loop.run_until_complete(self.driver.settle(adm, usage, failed=out.refused))
        self._count(facts, rec, new, served_before, logged)
        return new

    def _count(self, facts: Facts, rec: dict[str, Any], new: Decision, served_before: bool,
               logged: int) -> None:
        if facts.cluster is None or facts.account is None:
            return
        if facts.cluster not in self.rows and len(self.rows) >= self.max_clusters:
            return
        row = self.rows[facts.cluster]
        row.accounts.add(facts.account)
        row.requests += 1
        if rec.get("cluster"):
            row.old_clusters.add(str(rec["cluster"]))
        if rec.get("enforced"):
            row.refused_before += 1
        if new.enforced:
            row.refused_after += 1
        if served_before:
            row.tokens_before += logged
            if not new.enforced:
                row.tokens_after += logged

    def top(self, n: int = 10) -> list[tuple[str, ClusterRow]]:
        """The clusters of the new linking by tokens served before (the ones that matter)."""
        return sorted(self.rows.items(), key=lambda kv: (-kv[1].tokens_before, kv[0]))[:n]


def render_clusters(rows: Iterable[tuple[str, ClusterRow]], by_budget: Counter[str]) -> list[str]:
    """Report lines: per cluster, before and after; refusals per budget."""
    out = ["clusters under the new linking (top by tokens served as logged):",
           f"  {'cluster':<48} {'accounts':>8} {'requests':>8} {'refused':>15} "
           f"{'tokens served':>23}  old clusters"]
    for name, r in rows:
        out.append(f"  {name[:48]:<48} {len(r.accounts):>8} {r.requests:>8} "
                   f"{r.refused_before:>6} -> {r.refused_after:<6} "
                   f"{r.tokens_before:>10} -> {r.tokens_after:<10}  {len(r.old_clusters)}")
    if by_budget:
        out.append("budget refusals under the new rules: " + ", ".join(
            f"{k} {v}" for k, v in sorted(by_budget.items(), key=lambda kv: -kv[1])))
    return out
