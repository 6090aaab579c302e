"""The X-Forwarded-For / Forwarded (RFC 7239) headers: parsing, hops, the trusted walk."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .core import CidrSet, IPAddress, _address, _token_int, node_address

# -- Forwarded / X-Forwarded-For -------------------------------------------------------------
_MAX_ITEMS = 64  # elements parse_forwarded / parse_xff keep from one value; more is abuse
_MAX_LEN = 8192  # characters of a value they look at
# a run up to the next separator outside a quoted-string (an unterminated quote runs to the end)
_RUNS = {sep: re.compile(rf'(?:[^"{sep}]|"(?:[^"\\]|\\.)*"?)*', re.S).match for sep in ",;"}
_UNESCAPE = re.compile(r"\\(.?)", re.S).sub


def _split(s: str, sep: str) -> list[str]:
    """`s.split(sep)`, except inside double-quoted strings."""
    if '"' not in s:
        return s.split(sep)
    run, parts, pos = _RUNS[sep], [], 0
    while True:
        end = run(s, pos).end()  # type: ignore[union-attr]  # always matches, maybe ""
        parts.append(s[pos:end])
        if end >= len(s):
            return parts
        pos = end + 1


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = v[1:-1]
        return _UNESCAPE(r"\1", v) if "\\" in v else v
    return v


def _elements(value: str, quoted: bool = True) -> list[dict[str, str]]:
    """Every element of a Forwarded value, ``{}`` for one without a valid pair. With
    ``quoted=False``, commas and semicolons split even inside double quotes."""
    split = _split if quoted else str.split
    out = []
    for element in split(value, ","):
        params: dict[str, str] = {}
        for pair in split(element, ";"):
            name, eq, val = pair.partition("=")
            name = name.strip().lower()
            if eq and name and not any(c in name for c in ' "\t'):
                params.setdefault(name, _unquote(val))
        out.append(params)
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else bytes(value).decode("latin-1")


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """Parse an RFC 7239 `Forwarded` value into one dict per element (leftmost first).

    Parameter names are lower-cased, values unquoted and unescaped but otherwise as sent
    (`for` may be `192.0.2.1`, `[2001:db8::1]:4711`, `unknown` or `_hidden`; see `split_node`).
    Pairs without `=` or with an empty name are skipped, the first occurrence of a name wins,
    elements without any valid pair are dropped. Never raises.
    """
    try:
        return [p for p in _elements(_text(value)[:_MAX_LEN]) if p][:_MAX_ITEMS]
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


def xff_hops(value: str) -> list[str]:
    """Hops of an X-Forwarded-For value, left (origin) to right (nearest), stripped."""
    return [h.strip() for h in value.split(",")]


def forwarded_hops(value: str) -> list[str]:
    """The `for=` node of each element of a Forwarded value, left to right ('' where absent).

    Every comma splits, even inside quotes: an unbalanced quote sent by the client must not
    hide the elements that trusted proxies appended after it."""
    return [p.get("for", "") for p in _elements(value, quoted=False)]


def header_hops(name: str, value: str) -> list[str]:
    """Hops of the forwarding header ``name`` ("forwarded" or an X-Forwarded-For style one)."""
    return forwarded_hops(value) if name == "forwarded" else xff_hops(value)


def parse_xff(value: str) -> list[str]:
    """Split `X-Forwarded-For` into entries (leftmost first).

    Entries that are IP addresses (with or without port or brackets) come back canonical and
    port-less; other non-empty entries (`unknown`, host names, garbage) are kept stripped.
    """
    try:
        out: list[str] = []
        for part in xff_hops(_text(value)[:_MAX_LEN]):
            part = part.strip('"').strip()
            if part:
                out.append(node_address(part) or part)
                if len(out) >= _MAX_ITEMS:
                    break
        return out
    except Exception:
        return []


def trusted_walk(hops: Sequence[str], trusted: CidrSet) -> tuple[IPAddress | None, int]:
    """Walk forwarding hops right to left past trusted proxies (nginx real_ip_recursive).

    Returns (the last address reached, None if the rightmost hop is not an address; the index
    of the hop the walk stopped at: the first untrusted address or non-address, -1 if every
    hop is a trusted address). Hops are header tokens (quotes, brackets, ports allowed)."""
    last = None
    for i in range(len(hops) - 1, -1, -1):
        parsed = _token_int(hops[i])
        if parsed is None:
            return _address(last), i
        last = parsed
        if not trusted.contains_int(*parsed):
            return _address(parsed), i
    return _address(last), -1
