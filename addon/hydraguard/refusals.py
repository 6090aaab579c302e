"""Every refusal the proxy makes, one builder each: by a rule, by a budget, by an operator's
deny, for a body over the cap, for an incomplete or malformed request, for conflicting
credentials, for a path that is not served, for what cannot be metered (an unknown POST, a
WebSocket upgrade, a batch over an unknown file), for too many choices, and for an upstream
that failed or went silent.

The provider-format response for a refusal is built from the Decision by
`apis.error_response`; this module only decides its rule id, kind, reason and retry time.
An upstream failure is answered the same way, but the rules' decision stays the request's
decision (it was allowed; the log's `upstream_failure` and status say what happened).
"""

from __future__ import annotations

from .decision import Decision
from .policy.model import Rule


def by_rule(rule: Rule, shadow_rules: tuple[str, ...], shadow: bool,
            action: str | None = None, reason: str | None = None) -> Decision:
    """The decision of an access rule that matched (allow, deny or throttle)."""
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


def non_model_path() -> Decision:
    """A path that is not a model call, with `settings.non_model_paths: deny`."""
    return Decision("deny", "non_model_path", "this path is not served", kind="permission")


def bad_body(error: str) -> Decision:
    """A model call whose body could not be parsed (`settings.bad_body: deny`)."""
    return Decision("deny", "bad_body", error, kind="invalid_request")


def body_too_large(max_body_bytes: int | None) -> Decision:
    """A body over `settings.max_body_bytes` (None: the cap is not known here)."""
    what = f"{max_body_bytes} bytes" if max_body_bytes is not None else "the size limit"
    return Decision("deny", "body_too_large", f"request body exceeds {what}", kind="too_large")


def credential_conflict(problem: str) -> Decision:
    """Credential headers that disagree or repeat (`settings.extra_credentials: refuse`):
    which key would the upstream read, and which account is charged? Neither is guessed."""
    return Decision("deny", "credential_conflict",
                    f"{problem}; send one credential header, once", kind="invalid_request")


def incomplete_request(message: str) -> Decision:
    """A request that failed before it could be decided (client went away mid-upload)."""
    return Decision("deny", "incomplete_request", message, kind="invalid_request")


def by_override() -> Decision:
    """An account an operator denied through the admin listener (overrides.py)."""
    return Decision("deny", "admin_deny", "this account is blocked by the operator",
                    kind="permission")


def by_budget(rule: str, reason: str, kind: str, retry_after_s: float | None,
              shadow_rules: tuple[str, ...] = ()) -> Decision:
    """A request a token budget refused (see budgets/step.py for how it is decided)."""
    return Decision("throttle", rule, reason, kind=kind, retry_after_s=retry_after_s,
                    shadow_rules=shadow_rules)


def unmetered_post(method: str, path: str) -> Decision:
    """A POST (PUT, PATCH) to a path the proxy neither meters nor lists as harmless
    (`settings.harmless_posts`): what it would spend is unknown."""
    return Decision("deny", "unmetered_path",
                    f"{method} {path} is not served through this proxy: it cannot be metered",
                    kind="permission")


def unmetered_upgrade(path: str) -> Decision:
    """A WebSocket (or other protocol) upgrade no `allow` rule matched: a realtime session
    cannot be metered here."""
    return Decision("deny", "unmetered_upgrade",
                    f"protocol upgrades ({path}) are not served through this proxy: realtime "
                    "sessions cannot be metered", kind="permission")


def unmetered_batch(reason: str) -> Decision:
    """A batch whose cost is not known (its input file was not uploaded through this proxy,
    or has lines it cannot estimate)."""
    return Decision("deny", "unmetered_batch", reason, kind="permission")


def too_many_choices(samples: int, max_choices: int) -> Decision:
    """More outputs per prompt (`n`, `best_of`) than `settings.max_choices`."""
    return Decision("deny", "too_many_choices",
                    f"the request asks for {samples} outputs per prompt; at most {max_choices} "
                    "are served through this proxy", kind="invalid_request")
# failure (upstream.failure_of) -> (kind, message). No address, no detail of the upstream.
_UPSTREAM = {
    "unreachable": ("upstream", "the upstream API could not be reached; try again shortly"),
    "failed": ("upstream", "the upstream API closed the connection without a complete "
               "response; try again shortly"),
    "connect_timeout": ("upstream_timeout", "the upstream API did not accept a connection "
                        "in time; try again shortly"),
    "read_timeout": ("upstream_timeout", "the upstream API did not answer in time"),
}


def upstream_failure(failure: str) -> Decision:
    """The answer to an allowed request whose upstream failed: 502 (unreachable, reset,
    unparsable), 504 (connect or read timeout)."""
    kind, message = _UPSTREAM.get(failure, _UPSTREAM["failed"])
    return Decision("deny", f"upstream_{failure}", message, kind=kind)
