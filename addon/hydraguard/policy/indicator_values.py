"""Scalar value types of the `indicators:` section: names (of lists, patterns, runtimes), AS
numbers, JA4 fingerprints or prefixes, and the proxy header names hydraguard looks at. Each is
a schema `Custom` spec; a bad value is reported with its file:line:col like any other."""

from __future__ import annotations

import re

from .catalogue import FORWARDING_HEADERS, PROXY_HEADERS
from .schema import Custom, did_you_mean

__all__ = ["ASN", "HEADER_NAME", "JA4_PREFIX", "NAME", "RUNTIME"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_JA4_PART = re.compile(r"[a-z0-9_]{1,40}")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name (lower-case letters, digits, '_' "
                         "and '-', at most 64, starting with a letter or digit)")
    return value


def _asn(value: str) -> int:
    v = value.strip()
    if v[:2].lower() == "as":
        v = v[2:]
    if not v.isdigit() or int(v) > 0xFFFFFFFF:
        raise ValueError(f"{value!r} is not an AS number (e.g. 64510 or AS64510)")
    return int(v)


def _ja4_prefix(value: str) -> str:
    v = value.strip().lower()
    if not _JA4_PART.fullmatch(v) or v[0] not in "tqd":
        raise ValueError(f"{value!r} is not a JA4 fingerprint or prefix (e.g. t13d or "
                         "t13d1516h2_8daaf6152771_e5627efa2ab1)")
    return v


def _header_name(value: str) -> str:
    v = value.strip().lower()
    known = sorted(FORWARDING_HEADERS | PROXY_HEADERS)
    if v not in known:
        raise ValueError(f"{value!r} is not a proxy header hydraguard looks at"
                         f"{did_you_mean(v, known)}")
    return v


NAME = Custom(parse=_name, type_label="name")
RUNTIME = Custom(parse=lambda v: _name(v.strip().lower()), type_label="runtime name")
ASN = Custom(parse=_asn, type_label="AS number")
JA4_PREFIX = Custom(parse=_ja4_prefix, type_label="JA4 or JA4 prefix")
HEADER_NAME = Custom(parse=_header_name, type_label="header name")
