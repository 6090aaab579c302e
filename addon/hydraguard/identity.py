"""Accounts: a keyed hash (HMAC-SHA256) of the API key. The key itself is never kept.

The account is the key the upstream will authenticate the request with, never a header the
upstream ignores: a budget keyed on an ignored header is evaded by sending a fresh one with
every request. OpenAI reads `Authorization: Bearer`; Anthropic reads `x-api-key`, or the
Bearer token of a request without one. Credential headers that disagree with each other, or
that come on more than one line, are a `Credential.problem`: the proxy refuses the request or
strips the extras (`settings.extra_credentials`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import NamedTuple

Header = Callable[[str], str | None]
Values = Callable[[str], list[str]]  # every line of a header, in order ([] when absent)

API_KEY, AUTHORIZATION = "x-api-key", "authorization"
CREDENTIAL_HEADERS = (API_KEY, AUTHORIZATION)


def _bearer(value: str) -> str | None:
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _token(name: str, value: str) -> str | None:
    """The credential a header line carries (None: blank, or not a Bearer token)."""
    if name == API_KEY:
        return value.strip() or None
    return _bearer(value)


class Credential(NamedTuple):
    """The credential of a request as the upstream sees it (short-lived: holds the key)."""

    key: str | None  # what the upstream authenticates (first line of `header`)
    header: str | None  # where it is read from
    problem: str | None = None  # why the credential headers are ambiguous (no key in it)
    extra: tuple[str, ...] = ()  # credential headers the upstream does not read, present


def values_of(header: Header) -> Values:
    """`Values` over a joined-value lookup (each header counts as one line)."""
    def values(name: str) -> list[str]:
        v = header(name)
        return [] if v is None else [v]
    return values


def credential(provider: str, values: Values) -> Credential:
    """The credential `provider` ("anthropic" or "openai") authenticates, and any problem:
    a credential header on more than one line, or another credential header carrying a
    different key (an OpenAI call's x-api-key; an Anthropic call's Authorization beside its
    x-api-key). A header with the same key as the one read is not a problem, but still
    `extra` (a `strip` removes it)."""
    lines = {name: values(name) for name in CREDENTIAL_HEADERS}
    if provider == "anthropic" and any(v.strip() for v in lines[API_KEY]):
        used = API_KEY
    else:
        used = AUTHORIZATION
    first = lines[used][0] if lines[used] else None
    key = _token(used, first) if first is not None else None
    problems = [f"{len(v)} {name} headers" for name in CREDENTIAL_HEADERS
                if len(v := lines[name]) > 1]
    extra = tuple(name for name in CREDENTIAL_HEADERS
                  if name != used and any(v.strip() for v in lines[name]))
    for name in extra:
        if key is None:
            problems.append(f"{name} is not read by this API (it reads {used})")
        elif any(_token(name, v) != key for v in lines[name]):
            problems.append(f"{name} carries another key than {used}, which this API reads")
    problem = "conflicting credentials: " + "; ".join(problems) if problems else None
    return Credential(key, used, problem, extra)


def strip_edits(cred: Credential, values: Values) -> tuple[tuple[str, str], ...]:
    """How to forward only the credential the upstream reads: (header, "drop") for each extra
    credential header, (header, "first") when the one read came on several lines."""
    edits = [(name, "drop") for name in cred.extra]
    if cred.header is not None and len(values(cred.header)) > 1:
        edits.append((cred.header, "first"))
    return tuple(edits)


def account_id(secret: bytes, api_key: str) -> str:
    """Stable account id `acct_<20 hex>`: HMAC-SHA256 of the key under a shared secret."""
    mac = hmac.new(secret, api_key.encode("utf-8", "replace"), hashlib.sha256)
    return "acct_" + mac.hexdigest()[:20]
