"""The Decision value: what to do with one request (made by decide.py and refusals.py)."""

from __future__ import annotations

from typing import NamedTuple


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
