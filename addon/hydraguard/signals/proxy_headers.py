"""Proxy header indicators and tolerant parsers for `Forwarded` (RFC 7239) and `X-Forwarded-For`.

Forwarding headers from an untrusted peer are client-controlled and themselves a proxy indicator;
from a trusted peer they are expected, so only the non-forwarding proxy headers count. Absence
proves nothing: commercial proxies strip these headers. The parsers never raise.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Iterable, Mapping
from typing import Any

from ..policy.catalogue import FORWARDING_HEADERS, PROXY_HEADERS  # re-exported here

__all__ = [
    "FORWARDING_HEADERS",
    "PROXY_HEADERS",
    "format_forwarded",
    "node_address",
    "parse_forwarded",
    "parse_xff",
    "proxy_header_signals",
    "split_node",
]

_ALL = FORWARDING_HEADERS | PROXY_HEADERS
_MAX_ITEMS = 64  # elements kept from one header value; more is abuse
_MAX_LEN = 8192  # characters of a header value looked at


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


def _split_outside_quotes(s: str, sep: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in s:
        if escaped:
            buf.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            buf.append(ch)
            escaped = True
        elif ch == '"':
            buf.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        out: list[str] = []
        escaped = False
        for ch in v[1:-1]:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                out.append(ch)
        return "".join(out)
    return v


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """Parse an RFC 7239 `Forwarded` value into one dict per element (leftmost first).

    Parameter names are lower-cased, values unquoted and unescaped but otherwise as sent
    (`for` may be `192.0.2.1`, `[2001:db8::1]:4711`, `unknown` or `_hidden`; see `split_node`).
    Pairs without `=` or with an empty name are skipped, the first occurrence of a name wins,
    elements without any valid pair are dropped. Never raises.
    """
    try:
        if not isinstance(value, str):
            value = bytes(value).decode("latin-1")
        out: list[dict[str, str]] = []
        for element in _split_outside_quotes(value[:_MAX_LEN], ","):
            params: dict[str, str] = {}
            for pair in _split_outside_quotes(element, ";"):
                name, eq, val = pair.partition("=")
                name = name.strip().lower()
                if not eq or not name or any(c in name for c in ' "\t'):
                    continue
                params.setdefault(name, _unquote(val))
            if params:
                out.append(params)
                if len(out) >= _MAX_ITEMS:
                    break
        return out
    except Exception:
        return []


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters)


def format_forwarded(elements: Iterable[Mapping[str, str]]) -> str:
    """Serialise elements as a `Forwarded` value, quoting values that are not tokens."""
    out = []
    for el in elements:
        pairs = []
        for k, v in el.items():
            if v and all(c in _TOKEN_CHARS for c in v):
                pairs.append(f"{k}={v}")
            else:
                pairs.append(f'{k}="' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        out.append(";".join(pairs))
    return ", ".join(out)


def split_node(node: str) -> tuple[str, str | None]:
    """Split a `Forwarded` node or XFF entry into (host, port or None); brackets are removed."""
    node = node.strip()
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") and len(rest) > 1 else None
    if node.count(":") == 1:
        host, _, port = node.partition(":")
        return host, port or None
    return node, None


def node_address(node: str) -> str | None:
    """The canonical IP address in a node (`1.2.3.4:80`, `[::1]:80`, `::1`), None if not an IP."""
    try:
        host, _ = split_node(node)
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except (ValueError, TypeError):
        return None


def parse_xff(value: str) -> list[str]:
    """Split `X-Forwarded-For` into entries (leftmost first).

    Entries that are IP addresses (with or without port or brackets) come back canonical and
    port-less; other non-empty entries (`unknown`, host names, garbage) are kept stripped.
    """
    try:
        if not isinstance(value, str):
            value = bytes(value).decode("latin-1")
        out: list[str] = []
        for part in value[:_MAX_LEN].split(","):
            part = part.strip().strip('"').strip()
            if not part:
                continue
            out.append(node_address(part) or part)
            if len(out) >= _MAX_ITEMS:
                break
        return out
    except Exception:
        return []
