"""The pure decision core: (facts, policy) -> Decision. No I/O, no mitmproxy, no clock reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from .facts import Facts
from .policy.model import Policy, Rule


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a request.

    `action` is what the deciding rule says; when `shadow` is true the request is let through
    anyway (`enforced` is False). `kind` names the error flavour of a refusal.
    """

    action: str  # "allow" | "deny" | "throttle"
    rule: str
    reason: str = ""
    shadow: bool = False
    kind: str | None = None  # "permission" | "region" | "rate_limit" | "invalid_request" | ...
    retry_after_s: float | None = None
    shadow_rules: tuple[str, ...] = field(default=())

    @property
    def enforced(self) -> bool:
        """True when the proxy must answer the refusal itself."""
        return self.action != "allow" and not self.shadow


ALLOW_DEFAULT = Decision("allow", "default", "no rule matched")


def _from_rule(rule: Rule, shadow_rules: tuple[str, ...], shadow: bool) -> Decision:
    if rule.action == "deny":
        kind, retry = rule.deny_as, None
    elif rule.action == "throttle":
        kind, retry = "rate_limit", rule.retry_after_s
    else:
        kind, retry = None, None
    return Decision(rule.action, rule.id, rule.reason, shadow, kind, retry, shadow_rules)


def decide(facts: Facts, policy: Policy) -> Decision:
    """Evaluate the rules in order. The first enforcing match decides; shadow matches are
    recorded, and the first of them is reported (shadow=True) if nothing enforcing matched."""
    s = policy.settings
    if facts.api is None and s.non_model_paths == "deny":
        return Decision("deny", "non_model_path", "this path is not served", kind="permission")
    if facts.body_error is not None and facts.api is not None and s.bad_body == "deny":
        return Decision("deny", "bad_body", facts.body_error, kind="invalid_request")
    first_shadow: Rule | None = None
    shadow_hits: list[str] = []
    for rule in policy.rules:
        if rule.when is not None and not rule.when.test(facts):
            continue
        if rule.shadow:
            shadow_hits.append(rule.id)
            first_shadow = first_shadow or rule
            continue
        return _from_rule(rule, tuple(shadow_hits), False)
    if first_shadow is not None:
        return _from_rule(first_shadow, tuple(shadow_hits), True)
    return ALLOW_DEFAULT
