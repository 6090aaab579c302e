"""What the proxy remembers of each account for probation: first seen, requests served,
tokens charged. Compact (one int per account) and bounded (least recently active dropped).

An account is *established* for a probation budget when it is in the budget's known list, or
when it has been seen for ``min_age_s``, served ``min_requests`` requests and charged
``min_tokens`` tokens (each threshold only when set). A dropped account starts again as new:
the bound trades memory for a new probation, never for a free pass.

This is per replica: with several replicas an account establishes itself on each one (the
stricter reading). Times are whole seconds of the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable

from ..policy.budget_model import ProbationSpec

__all__ = ["AccountHistory"]

_REQ_BITS, _TOK_BITS = 20, 36
_REQ_MAX, _TOK_MAX = (1 << _REQ_BITS) - 1, (1 << _TOK_BITS) - 1
_TOK_SHIFT = _REQ_BITS
_SEEN_SHIFT = _REQ_BITS + _TOK_BITS


class AccountHistory:
    """Per-account (first seen, requests served, tokens charged), packed into one int."""

    def __init__(self, clock: Callable[[], float], max_accounts: int = 1_000_000) -> None:
        self.clock = clock
        self.max_accounts = max(1, int(max_accounts))
        self._rec: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._rec)

    def _get(self, account: str) -> int:
        """The packed record (created now when new); marks the account as active."""
        rec = self._rec
        v = rec.pop(account, None)
        if v is None:
            v = int(self.clock()) << _SEEN_SHIFT
            if len(rec) >= self.max_accounts:
                del rec[next(iter(rec))]  # least recently active
        rec[account] = v
        return v

    def seen(self, account: str) -> tuple[float, int, int]:
        """(first seen, requests served, tokens charged); records a new account as seen."""
        v = self._get(account)
        return float(v >> _SEEN_SHIFT), v & _REQ_MAX, (v >> _TOK_SHIFT) & _TOK_MAX

    def served(self, account: str, tokens: int) -> None:
        """One request served to the account, charged ``tokens``."""
        v = self._get(account)
        req = min(_REQ_MAX, (v & _REQ_MAX) + 1)
        tok = min(_TOK_MAX, ((v >> _TOK_SHIFT) & _TOK_MAX) + max(0, int(tokens)))
        self._rec[account] = (v >> _SEEN_SHIFT << _SEEN_SHIFT) | (tok << _TOK_SHIFT) | req

    def established(self, account: str | None, spec: ProbationSpec) -> bool:
        """True when the account no longer needs probation under ``spec``."""
        if account is None:
            return False
        if account in spec.known:
            return True
        first, requests, tokens = self.seen(account)
        return (self.clock() - first >= spec.min_age_s and requests >= spec.min_requests
                and tokens >= spec.min_tokens)
