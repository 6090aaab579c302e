"""Redis key names and script arguments of the Redis budget backend (``redis_state.py``).

Per budget key a bucket hash ``…:b`` (window levels, and the amount of each open hold) and
a hold index ``…:h`` (hold expiries), named ``{prefix}:v5:{<group>}:<key>:b`` when the key
belongs to a group (the budgets of one cluster: one hash slot, one script), else
``{prefix}:v5:{<key>}:b``. ``v5`` is ``redis_state.LAYOUT_VERSION``: every key (links
included) starts with ``{prefix}:v<LAYOUT_VERSION>:``. The rule: a change to what a key holds
or how it is named, on a single Redis or on a Redis Cluster, bumps the version (4: on a
cluster the hydra-link evidence sets have hash tags of their own; 5: on a cluster the
per-account link structures are sharded, ``{links:<definition>:<shard>}``; budget keys and
the single-Redis link keys are unchanged since 3); replicas of the old and the new layout then use
disjoint keys, so a rolling update never lets one replica misread the other's state (while
both run, each layout enforces its own budget levels: the old keys expire by their TTLs
once the last old replica is gone). The braces are a Redis Cluster hash tag. Every key
carries a TTL (see ``scripts.py``). Key parts containing braces/whitespace or longer than
200 chars are replaced by a hash.
"""

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
