"""Cluster keys and ids: the budget key built from request attributes, the id of a linked
cluster. Pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from hashlib import blake2b
from urllib.parse import quote

__all__ = ["CLUSTER_KEY_ATTRS", "cluster_id", "cluster_key"]

CLUSTER_KEY_ATTRS = frozenset(
    {"account", "ip", "prefix", "asn", "country", "ja4", "api", "model", "cluster", "network"}
)
_MAX_PART = 64
_SAFE_PART = re.compile(r"[A-Za-z0-9._:/@+-]{1,64}")
_QUOTE_SAFE = "._:/@+-"


def _key_part(value: str | None) -> str:
    if value is None or value == "":
        return "-"
    if value == "-":
        return "%2D"  # keep "missing" and a literal "-" apart
    if _SAFE_PART.fullmatch(value):
        return value
    q = quote(value, safe=_QUOTE_SAFE)
    if len(q) <= _MAX_PART:
        return q
    return "#" + blake2b(value.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def cluster_key(template: Iterable[str], attrs: Mapping[str, str | None]) -> str:
    """Budget key from the request attributes named in ``template``.

    Format ``name=value|name=value`` in template order.  A missing/empty attribute becomes
    ``-``; values are percent-encoded outside ``[A-Za-z0-9._:/@+-]`` (so never contain
    spaces, braces, ``|`` or ``=``) and hashed (``#`` + 24 hex) when longer than 64 chars.
    Unknown attribute names raise ``ValueError``.
    """
    parts = []
    for name in template:
        if name not in CLUSTER_KEY_ATTRS:
            raise ValueError(
                f"unknown cluster key attribute {name!r} (known: {sorted(CLUSTER_KEY_ATTRS)})"
            )
        parts.append(f"{name}={_key_part(attrs.get(name))}")
    if not parts:
        raise ValueError("cluster key template must name at least one attribute")
    return "|".join(parts)


@lru_cache(maxsize=65_536)
def cluster_id(root: str) -> str:
    """The id of the linked cluster whose first-seen member is ``root`` (``"h-"`` + 16 hex):
    the same on every replica."""
    return "h-" + blake2b(root.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
