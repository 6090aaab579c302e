"""CIDR list files: plain, Tor exit lists, AWS and GCP range JSON."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network

from .core import IPNetwork

# -- list files ------------------------------------------------------------------------------
FORMATS = ("plain", "tor", "aws", "gcp")
_MAX_ERRORS = 100  # error strings kept; the count is reported in the last one


def _err(errors: list[str], msg: str) -> None:
    if len(errors) < _MAX_ERRORS:
        errors.append(msg[:200])
    elif len(errors) == _MAX_ERRORS:
        errors.append("more errors not listed")


def _parse_lines(text: str, addresses_only: bool) -> tuple[list[IPNetwork], list[str]]:
    nets: list[IPNetwork] = []
    errors: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if addresses_only:
            words = line.split()
            if words[0] == "ExitAddress" and len(words) > 1:  # Tor exit-addresses format
                line = words[1]
            elif words[0] in ("ExitNode", "Published", "LastStatus"):
                continue
        try:
            if addresses_only:
                nets.append(ip_network(ip_address(line)))
            else:
                nets.append(ip_network(line, strict=False))
        except ValueError:
            what = "IP address" if addresses_only else "IP or CIDR"
            _err(errors, f"line {n}: not an {what}: {line[:60]!r}")
    return nets, errors


def _parse_json(
    text: str, spec: tuple[tuple[str, tuple[str, ...]], ...]
) -> tuple[list[IPNetwork], list[str]]:
    nets: list[IPNetwork] = []
    errors: list[str] = []
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        return [], [f"invalid JSON: {e}"]
    if not isinstance(doc, dict):
        return [], ["invalid document: top level is not an object"]
    found = False
    for list_key, fields in spec:
        items = doc.get(list_key)
        if items is None:
            continue
        if not isinstance(items, list):
            _err(errors, f"{list_key}: not a list")
            continue
        found = True
        for i, item in enumerate(items):
            value = None
            if isinstance(item, dict):
                value = next((item[f] for f in fields if f in item), None)
            try:
                if not isinstance(value, str):
                    raise ValueError
                nets.append(ip_network(value, strict=False))
            except ValueError:
                _err(errors, f"{list_key}[{i}]: no valid {' or '.join(fields)}: {value!r:.60}")
    if not found:
        _err(errors, "invalid document: no " + " or ".join(k for k, _ in spec) + " list")
    return nets, errors


_JSON_SPECS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "aws": (("prefixes", ("ip_prefix",)), ("ipv6_prefixes", ("ipv6_prefix",))),
    "gcp": (("prefixes", ("ipv4Prefix", "ipv6Prefix")),),
}


def parse_list(text: str, fmt: str) -> tuple[list[IPNetwork], list[str]]:
    """Parse a list file's text. fmt: "plain" (CIDR or IP per line, `#` comments), "tor" (one IP
    per line, or the exit-addresses format), "aws" (ip-ranges.json), "gcp" (cloud.json).

    Returns (networks, one error string per rejected entry); never raises.
    """
    try:
        if not isinstance(text, str):
            text = bytes(text).decode("utf-8", "replace")
        if fmt == "plain":
            return _parse_lines(text, addresses_only=False)
        if fmt == "tor":
            return _parse_lines(text, addresses_only=True)
        if fmt in _JSON_SPECS:
            return _parse_json(text, _JSON_SPECS[fmt])
        return [], [f"unknown list format {fmt!r} (use one of {', '.join(FORMATS)})"]
    except Exception as e:  # defensive: never raise on input
        return [], [f"parse failed: {type(e).__name__}"]


