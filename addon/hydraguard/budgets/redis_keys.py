"""Redis key names and script arguments of the Redis budget backend (``redis_state.py``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from hashlib import blake2b
from urllib.parse import urlsplit, urlunsplit

from . import bucket
from .spec import WindowSpec

__all__ = ["bucket_keys", "redact_url", "safe_part", "script_args"]

_SAFE_KEY = re.compile(r"[^{}\s]{1,200}")


def safe_part(part: str) -> str:
    """Key part without braces/whitespace (hash tag safety), bounded length."""
    if _SAFE_KEY.fullmatch(part):
        return part
    return "#" + blake2b(part.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def script_args(windows: Sequence[WindowSpec]) -> tuple[tuple[WindowSpec, ...], list[str]]:
    """The validated windows and their window block (see ``scripts.py``): n, the 2n hash
    fields, then ``limit, period`` per window."""
    ws = bucket.check_request(windows, 0)
    out = [str(len(ws))]
    for w in ws:
        out += (f"{w.name}:u", f"{w.name}:t")
    for w in ws:
        out += (str(w.limit), repr(float(w.period_s)))
    return ws, out


def bucket_keys(keyspace: str, key: str, group: str | None = None) -> tuple[str, str]:
    """(bucket hash, hold index) of a budget key: ``{keyspace}:{<group>}:<key>:b|h`` in a
    group (its hash tag), else ``{keyspace}:{<key>}:b|h``."""
    if group is None:
        base = f"{keyspace}:{{{safe_part(key)}}}"
    else:
        base = f"{keyspace}:{{{safe_part(group)}}}:{safe_part(key)}"
    return f"{base}:b", f"{base}:h"
