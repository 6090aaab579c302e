"""`hydraguard replay`: re-decide logged requests under new rules and count what changes.

Each decision log line carries the facts the rules read (client IP and its source, account
hash, API, model, stream, output cap, token estimate, GeoIP result, signals, cluster), so a
request is re-decided without secrets or bodies. What replay does NOT re-run:

* budgets (by default): they are stateful. A request that a budget refused (`stage: budget`
  in the log) keeps that decision when the new rules let it through; when the new rules
  refuse it, the rule decision is reported. With `--budgets` (replay_budgets.py) linking,
  probation and budgets ARE re-run from the logged facts, in log order, on in-memory state.
* client IP resolution and indicators: the logged client IP and signals are used as they are
  (a change of `trusted_proxies` or of indicator settings is not reflected).
* GeoIP: the logged result is used, unless `relookup_geo` asks the new rules' databases.
  With `log.truncate_ip`, the logged address is a network; its first address is used.

Batches: a batch submission's line carries its summary (`batch.summary`: requests, input
estimate and output caps per model), so the new rules decide it per model like the proxy
does; the report counts batch submissions, the requests and tokens they asked for, those
the new rules would refuse, and the settlements (refunds) logged. The route (unknown POSTs,
protocol upgrades, harmless POSTs) is worked out again under the new `harmless_posts`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import refusals
from ..decide import Decision, decide
from ..facts import Facts
from ..gather import facts_from_log, set_geo
from ..pipeline import open_geo
from ..policy import Policy
from .replay_budgets import BudgetReplay


def label(action: str, rule: str, shadow: bool = False, budget: bool = False) -> str:
    out = f"{action}/{rule}"
    if shadow:
        out += " (shadow)"
    if budget:
        out += " [budget]"
    return out


@dataclass
class Example:
    request_id: str
    ts: str
    client_ip: str
    what: str  # api model
    old: str
    new: str
    reason: str


@dataclass
class ReplayReport:
    total: int = 0
    malformed: int = 0
    malformed_lines: list[int] = field(default_factory=list)
    truncated_ips: int = 0
    budget_kept: int = 0
    batches: Counter = field(default_factory=Counter)  # submissions, requests, tokens, ...
    changed: Counter = field(default_factory=Counter)  # (old, new) -> n
    unchanged: Counter = field(default_factory=Counter)  # label -> n
    examples: dict[tuple[str, str], list[Example]] = field(
        default_factory=lambda: defaultdict(list))

    @property
    def changed_total(self) -> int:
        return sum(self.changed.values())


def redecide(facts: Facts, policy: Policy) -> Decision:
    if facts.body_error == "too_large":
        return refusals.body_too_large(None)
    return decide(facts, policy)


def replay(lines: Iterable[str], policy: Policy, *, examples: int = 3,
           relookup_geo: bool = False, budgets: BudgetReplay | None = None) -> ReplayReport:
    """Re-decide every decision line under `policy`; with `budgets`, linking, probation and
    budgets are re-run too (authoring/replay_budgets.py), in log order."""
    rep = ReplayReport()
    geo = open_geo(policy) if relookup_geo else None
    try:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                facts, truncated = facts_from_log(rec, policy)
                old = label(str(rec["action"]), str(rec["rule"]), bool(rec.get("shadow")),
                            rec.get("stage") == "budget")
            except (ValueError, KeyError, TypeError):
                rep.malformed += 1
                if len(rep.malformed_lines) < 10:
                    rep.malformed_lines.append(n)
                continue
            rep.total += 1
            rep.truncated_ips += truncated
            if geo is not None and facts.client_ip is not None and not truncated:
                set_geo(facts, geo.lookup(facts.client_ip))
            d = redecide(facts, policy)
            new = label(d.action, d.rule, d.shadow)
            if budgets is not None:
                d = budgets.step(facts, rec, d)
                new = label(d.action, d.rule, d.shadow, d.action == "throttle" and not
                            any(r.id == d.rule for r in policy.rules))
            elif rec.get("stage") == "budget" and not d.enforced:
                new = old  # budgets are not re-simulated: the budget decision stands
                rep.budget_kept += 1
            _count_batches(rep, rec, facts, d)
            if new == old:
                rep.unchanged[old] += 1
                continue
            rep.changed[(old, new)] += 1
            ex = rep.examples[(old, new)]
            if len(ex) < examples:
                what = f"{facts.api or facts.path} {facts.model or ''}".strip()
                if facts.batch is not None:
                    what += f" ({facts.batch.requests} requests)"
                ex.append(Example(facts.request_id, str(rec.get("ts", "")),
                                  str(rec.get("client_ip")), what, old, new, d.reason))
    finally:
        if geo is not None:
            geo.close()
    return rep


def _count_batches(rep: ReplayReport, rec: dict[str, Any], facts: Facts, d: Decision) -> None:
    b = rec.get("batch")
    if facts.route == "batch" and isinstance(b, dict):
        c = rep.batches
        c["submissions"] += 1
        c["requests"] += int(b.get("requests") or 0)
        c["tokens_reserved"] += int(b.get("tokens_reserved") or 0)
        if not rec.get("enforced") and d.enforced:
            c["refused_now"] += 1
            c["requests_refused_now"] += int(b.get("requests") or 0)
    for s in rec.get("batch_settle") or ():
        if isinstance(s, dict):
            rep.batches["settlements"] += 1
            rep.batches["tokens_returned"] -= sum(
                min(0, int(x.get("change") or 0)) for x in s.get("budgets") or ()
                if isinstance(x, dict))


def render(rep: ReplayReport, log_name: str, rules_name: str) -> str:
    lines = [f"replayed {rep.total} request(s) from {log_name} under {rules_name}: "
             f"{rep.changed_total} would change, {rep.total - rep.changed_total} unchanged"]
    if rep.malformed:
        at = ", ".join(map(str, rep.malformed_lines))
        lines.append(f"skipped {rep.malformed} malformed line(s) (line {at}"
                     f"{', ...' if rep.malformed > len(rep.malformed_lines) else ''})")
    if rep.changed:
        lines.append("changed (old -> new):")
        for (old, new), n in sorted(rep.changed.items(), key=lambda x: (-x[1], x[0])):
            lines.append(f"  {n:>7}  {old} -> {new}")
    if rep.unchanged:
        lines.append("unchanged:")
        for lab, n in sorted(rep.unchanged.items(), key=lambda x: (-x[1], x[0])):
            lines.append(f"  {n:>7}  {lab}")
    if rep.examples:
        lines.append("examples:")
        for (old, new), exs in sorted(rep.examples.items()):
            lines.append(f"  {old} -> {new}")
            for e in exs:
                lines.append(f"    {e.request_id} {e.ts} {e.client_ip} {e.what}: {e.reason}")
    if rep.batches:
        c = rep.batches
        lines.append(f"batches: {c['submissions']} submission(s), {c['requests']} request(s), "
                     f"{c['tokens_reserved']} token(s) reserved as logged; the new rules "
                     f"refuse {c['refused_now']} of them ({c['requests_refused_now']} "
                     f"request(s)); {c['settlements']} settlement(s) gave back "
                     f"{c['tokens_returned']} token(s)")
    notes = []
    if rep.budget_kept:
        notes.append(f"{rep.budget_kept} budget refusal(s) kept as logged "
                     "(budgets are not re-simulated)")
    if rep.truncated_ips:
        notes.append(f"{rep.truncated_ips} request(s) had truncated IPs (network address used)")
    for n in notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def as_json(rep: ReplayReport) -> dict[str, Any]:
    return {
        "total": rep.total, "changed": rep.changed_total, "malformed": rep.malformed,
        "budget_kept": rep.budget_kept, "truncated_ips": rep.truncated_ips,
        "batches": dict(rep.batches),
        "transitions": [{"old": o, "new": n, "count": c} for (o, n), c in rep.changed.items()],
        "unchanged": dict(rep.unchanged),
        "examples": [{"old": o, "new": n, "request_id": e.request_id, "ts": e.ts,
                      "client_ip": e.client_ip, "reason": e.reason}
                     for (o, n), exs in rep.examples.items() for e in exs],
    }
