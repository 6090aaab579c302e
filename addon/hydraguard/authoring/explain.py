"""`hydraguard explain`: one request, every step of the decision, readable."""

from __future__ import annotations

import json
from typing import Any

from .evaluate import Evaluation


def _geo_text(geo: Any) -> str:
    if geo is None:
        return "(no GeoIP databases)"
    if geo.is_private:
        return "private address (not looked up)"
    if geo.error and not geo.found and geo.asn is None:
        return f"lookup failed ({geo.error})"
    if not geo.found and geo.asn is None:
        return "no record"
    parts = [f"country {geo.country or '-'}"]
    if geo.registered_country and geo.registered_country != geo.country:
        parts.append(f"registered {geo.registered_country}")
    if geo.subdivisions:
        parts.append("subdivisions " + ",".join(geo.subdivisions))
    if geo.asn is not None:
        parts.append(f"AS{geo.asn}" + (f" ({geo.as_org})" if geo.as_org else ""))
    if geo.is_anycast:
        parts.append("anycast")
    if geo.anonymous:
        parts.append("anonymous " + ",".join(sorted(geo.anonymous)))
    if geo.error:
        parts.append(f"lookup failed ({geo.error})")
    return ", ".join(parts)


def _value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def _link_config(ev: Evaluation) -> Any:
    ref = ev.facts.cluster_ref
    b = getattr(ev.policy, "budgets", None)
    for c in getattr(b, "clusters", ()) or ():
        if ref is not None and c.id == ref.definition:
            return c.link
    return None


def link_text(ev: Evaluation, cfg: Any) -> str:
    """The `link` line: why the account is in a linked cluster, or what evidence this request
    brings towards linking (kinds with the weight each would add, flagged or not)."""
    from ..clusters.resolve import evidence_of, flagged_of

    f = ev.facts
    link = f.cluster_ref.link if f.cluster_ref is not None else None
    if link:
        kinds = link.get("kinds") or {}
        why = ", ".join(f"{k} x{n}" for k, n in kinds.items())
        text = f"linked: cluster of {link['members']} accounts"
        if "score" in link:
            text += (f"; pair score {link['score']:g} >= {cfg.threshold:g} from {why}"
                     f"{' (flagged networks)' if link.get('flagged') else ''}, via account "
                     f"{link.get('via')}, {link.get('age_s')} s ago")
        return text
    if f.account is None:
        return "not linked (no API key)"
    flagged = flagged_of(f, cfg)
    rules = {r.kind: r for r in cfg.rules}
    parts = [f"{k} {(r.flagged_weight if flagged else r.weight):g}"
             for k, v in evidence_of(f, cfg).items() if v and (r := rules.get(k)) is not None]
    net = "flagged network" if flagged else "unflagged network"
    return (f"not linked; this request's evidence ({net}), weight per shared value: "
            f"{', '.join(parts) or '(none)'}; threshold {cfg.threshold:g}")


def decision_text(ev: Evaluation) -> str:
    d = ev.decision
    head = f"{d.action} by {'rule ' if d.rule not in ('default',) else ''}{d.rule}"
    if d.shadow:
        head += " (shadow: logged, request forwarded)"
    how = f"answered {ev.status} ({d.kind})" if ev.status is not None else "forwarded upstream"
    if d.retry_after_s is not None and ev.status is not None:
        how += f", retry-after {d.retry_after_s:g}s"
    return f"{head}: {d.reason} -> {how}"


def render(ev: Evaluation, notes: list[str] | None = None) -> str:
    """The human report of `hydraguard explain`."""
    f = ev.facts
    lines = [f"request   {f.method} {f.path}"]
    if f.api:
        lines.append(f"api       {f.api}, model {f.model or '-'}, stream {str(f.stream).lower()}, "
                     f"max_output {f.max_output if f.max_output is not None else '-'}, "
                     f"input_tokens_est {f.input_tokens_est}")
    else:
        lines.append("api       (not a model call)")
    if f.body_error:
        lines.append(f"body      error: {f.body_error}")
    lines.append(f"client    {f.client_ip or '-'} (from {f.client_ip_source}; "
                 f"peer {f.peer_ip or '-'})")
    lines.append(f"account   {f.account or '(no API key)'}")
    lines.append(f"geo       {_geo_text(f.geo)}")
    if f.signals:
        lines.append("signals   " + ", ".join(f"{k}={_value(v)}"
                                               for k, v in sorted(f.signals.items())))
    else:
        lines.append("signals   (none)")
    lines.append("rules")
    if not ev.trace:
        lines.append("  (no rules)")
    width = max((len(t.id) for t in ev.trace), default=0)
    for i, t in enumerate(ev.trace, 1):
        mode = f"{t.action}{' shadow' if t.shadow else ''}"
        lines.append(f"  {i}. {t.id:<{width}}  {mode:<15} {t.outcome.upper()}")
        lines.append(f"     {t.detail}")
    lines.append(f"cluster   {f.cluster or '-'}")
    cfg = _link_config(ev)
    if cfg is not None:
        lines.append(f"link      {link_text(ev, cfg)}")
    if ev.budget:
        items = ev.budget.get("budget") if isinstance(ev.budget.get("budget"), list) else None
        if items:
            for b in items:
                lines.append("budget    " + ", ".join(f"{k} {_value(v)}" for k, v in b.items()
                                                      if v is not None))
        else:
            lines.append("budget    " + json.dumps(ev.budget, default=str))
    else:
        lines.append(f"budget    {ev.budget_note or '-'}")
    if ev.budget and ev.budget_note:
        lines.append(f"          ({ev.budget_note})")
    lines.append(f"decision  {decision_text(ev)}")
    for n in notes or ():
        lines.append(f"note      {n}")
    return "\n".join(lines)


def as_json(ev: Evaluation, notes: list[str] | None = None) -> dict[str, Any]:
    """Machine output of `hydraguard explain --json`."""
    d = ev.decision
    return {
        "decision": {"action": d.action, "rule": d.rule, "reason": d.reason,
                     "shadow": d.shadow, "enforced": d.enforced, "kind": d.kind,
                     "status": ev.status, "retry_after": d.retry_after_s,
                     "shadow_rules": list(d.shadow_rules)},
        "rules": [{"id": t.id, "action": t.action, "shadow": t.shadow, "outcome": t.outcome,
                   "detail": t.detail, "where": t.where} for t in ev.trace],
        "cluster": ev.facts.cluster,
        "link": (dict(ev.facts.cluster_ref.link) if ev.facts.cluster_ref is not None
                 and ev.facts.cluster_ref.link else None),
        "budget": ev.budget,
        "record": ev.record,
        "notes": list(notes or ()) + ([ev.budget_note] if ev.budget_note else []),
    }
