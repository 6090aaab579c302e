"""Proxy header indicators: which forwarding / proxy headers a request carries.

Forwarding headers from an untrusted peer are client-controlled and themselves a proxy indicator;
from a trusted peer they are expected, so only the non-forwarding proxy headers count. Absence
proves nothing: commercial proxies strip these headers. The `Forwarded` / `X-Forwarded-For`
value parsers are in `hydraguard.addresses`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..policy.catalogue import FORWARDING_HEADERS, PROXY_HEADERS  # re-exported here

__all__ = ["FORWARDING_HEADERS", "PROXY_HEADERS", "proxy_header_signals"]

_ALL = FORWARDING_HEADERS | PROXY_HEADERS


def _names(headers: Any) -> Iterable[str]:
    if isinstance(headers, Mapping) or hasattr(headers, "keys"):
        keys: Iterable[Any] = headers.keys()
    else:
        keys = (pair[0] for pair in headers)
    for k in keys:
        if isinstance(k, bytes | bytearray):
            k = bytes(k).decode("latin-1")
        yield str(k).lower()


def proxy_header_signals(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], peer_trusted: bool
) -> frozenset[str]:
    """Lower-cased names of proxy headers present (forwarding ones only if the peer is untrusted).

    `headers` may be a Mapping (mitmproxy `Headers` included) or (name, value) pairs, str or bytes.
    """
    try:
        wanted = PROXY_HEADERS if peer_trusted else _ALL
        return frozenset(n for n in _names(headers) if n in wanted)
    except Exception:
        return frozenset()
