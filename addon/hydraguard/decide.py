"""The pure decision core: (facts, policy) -> Decision. No I/O, no mitmproxy, no clock reads."""

from __future__ import annotations

from . import refusals
from .decision import ALLOW_DEFAULT, Decision
from .facts import Facts, for_model
from .policy.model import Policy, Rule

__all__ = ["ALLOW_DEFAULT", "Decision", "decide"]


def _match(rule: Rule, facts: Facts) -> tuple[str, bool, str | None] | None:
    """(action, shadow, reason override) if the rule applies to the request, else None."""
    if rule.when is not None and not rule.when.test(facts):
        return None
    if rule.exempt is not None and rule.exempt.test(facts):
        return None
    if rule.region is None:
        return rule.action, rule.shadow, None
    got = rule.region.outcome(facts.geo)
    if got is None:
        return None
    outcome, why = got
    reason = rule.reason or why
    if outcome == "action":
        return rule.action, rule.shadow, reason
    if outcome == "shadow":
        return rule.action, True, reason
    return outcome, rule.shadow, reason


def decide(facts: Facts, policy: Policy) -> Decision:
    """The proxy's own checks (see below), then the rules in order: the first enforcing match
    decides; shadow matches are recorded, and the first of them is reported (shadow=True) if
    nothing enforcing matched. A batch naming several models is decided once per model (the
    first enforced refusal wins), so a rule on one model cannot be evaded by mixing in another.
    A protocol upgrade is forwarded only when an `allow` rule matched it."""
    s = policy.settings
    if facts.api is None and s.non_model_paths == "deny":
        return refusals.non_model_path()
    if facts.override == "deny":
        return refusals.by_override()
    if facts.credential_problem is not None and s.extra_credentials == "refuse":
        return refusals.credential_conflict(facts.credential_problem)
    if facts.route == "unknown":
        return refusals.unmetered_post(facts.method, facts.path)
    if facts.body_error is not None and facts.api is not None and s.bad_body == "deny":
        return refusals.bad_body(facts.body_error)
    if facts.unmetered is not None:
        return refusals.unmetered_batch(facts.unmetered)
    if facts.samples > s.max_choices:
        return refusals.too_many_choices(facts.samples, s.max_choices)
    b = facts.batch
    if b is not None and len(b.parts) > 1:
        found = [_by_rules(for_model(facts, m), policy) for m in b.models]
        d = next((x for x in found if x.enforced), None) or next(
            (x for x in found if x.shadow), found[0])
    else:
        d = _by_rules(facts, policy)
    if facts.route == "upgrade" and not d.enforced and (
            d.action != "allow" or d.rule == ALLOW_DEFAULT.rule or d.shadow):
        return refusals.unmetered_upgrade(facts.path)._replace(shadow_rules=d.shadow_rules)
    return d


def _by_rules(facts: Facts, policy: Policy) -> Decision:
    first_shadow: tuple[Rule, str, str | None] | None = None
    shadow_hits: list[str] = []
    for rule in policy.rules:
        m = _match(rule, facts)
        if m is None:
            continue
        action, shadow, reason = m
        if shadow:
            shadow_hits.append(rule.id)
            if first_shadow is None:
                first_shadow = (rule, action, reason)
            continue
        return refusals.by_rule(rule, tuple(shadow_hits), False, action, reason)
    if first_shadow is not None:
        rule, action, reason = first_shadow
        return refusals.by_rule(rule, tuple(shadow_hits), True, action, reason)
    return ALLOW_DEFAULT
