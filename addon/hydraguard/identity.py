"""Accounts: a keyed hash (HMAC-SHA256) of the API key. The key itself is never kept."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

Header = Callable[[str], str | None]


def api_key_from(header: Header) -> str | None:
    """The API key from `x-api-key` or `Authorization: Bearer ...`, if any."""
    key = header("x-api-key")
    if key and key.strip():
        return key.strip()
    auth = header("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def account_id(secret: bytes, api_key: str) -> str:
    """Stable account id `acct_<20 hex>`: HMAC-SHA256 of the key under a shared secret."""
    mac = hmac.new(secret, api_key.encode("utf-8", "replace"), hashlib.sha256)
    return "acct_" + mac.hexdigest()[:20]
