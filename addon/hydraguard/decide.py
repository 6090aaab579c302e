"""The pure decision core: (facts, policy) -> Decision. No I/O, no mitmproxy, no clock reads."""

from __future__ import annotations

from typing import NamedTuple

from .facts import Facts
from .policy.model import Policy, Rule


class Decision(NamedTuple):
    """What to do with a request (immutable; a NamedTuple because it is made per request).

    `action` is what the deciding rule says; when `shadow` is true the request is let through
    anyway (`enforced` is False). `kind` names the error flavour of a refusal.
    """

    action: str  # "allow" | "deny" | "throttle"
    rule: str
    reason: str = ""
    shadow: bool = False
    kind: str | None = None  # "permission" | "region" | "rate_limit" | "invalid_request" | ...
    retry_after_s: float | None = None
    shadow_rules: tuple[str, ...] = ()

    @property
    def enforced(self) -> bool:
        """True when the proxy must answer the refusal itself."""
        return self.action != "allow" and not self.shadow


ALLOW_DEFAULT = Decision("allow", "default", "no rule matched")


def _from_rule(rule: Rule, shadow_rules: tuple[str, ...], shadow: bool,
               action: str | None = None, reason: str | None = None) -> Decision:
    action = action or rule.action
    verb = "allowed" if action == "allow" else "refused"
    reason = reason or rule.reason or f"request {verb} by rule {rule.id}"
    if action == "deny":
        kind, retry = rule.deny_as, None
    elif action == "throttle":
        kind, retry = "rate_limit", rule.retry_after_s
    else:
        kind, retry = None, None
    return Decision(action, rule.id, reason, shadow, kind, retry, shadow_rules)


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
    """Evaluate the rules in order. The first enforcing match decides; shadow matches are
    recorded, and the first of them is reported (shadow=True) if nothing enforcing matched."""
    s = policy.settings
    if facts.api is None and s.non_model_paths == "deny":
        return Decision("deny", "non_model_path", "this path is not served", kind="permission")
    if facts.body_error is not None and facts.api is not None and s.bad_body == "deny":
        return Decision("deny", "bad_body", facts.body_error, kind="invalid_request")
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
        return _from_rule(rule, tuple(shadow_hits), False, action, reason)
    if first_shadow is not None:
        rule, action, reason = first_shadow
        return _from_rule(rule, tuple(shadow_hits), True, action, reason)
    return ALLOW_DEFAULT
