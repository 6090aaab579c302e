"""IP addresses in one place (stdlib only): parsing, private ranges, network prefixes, CIDR sets
and list files, and the X-Forwarded-For / Forwarded (RFC 7239) hop walk.

IPv4-mapped IPv6 (``::ffff:a.b.c.d``, seen on dual-stack sockets) counts as IPv4, except in the
canonical text of `node_address` / `parse_xff`. "Private" is deliberately NOT ``ipaddress``'s
``is_private``: the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32) are public here, because hydraguard's demo and tests geolocate them.
Nothing raises on bad input except where a docstring says so.
"""

from __future__ import annotations

import json
import re
import socket
import string
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

__all__ = [
    "FORMATS", "CidrSet", "IPAddress", "IPNetwork", "classify", "format_forwarded",
    "forwarded_hops", "header_hops", "ip_to_int", "is_private_address", "node_address",
    "parse_forwarded", "parse_ip", "parse_list", "parse_xff", "prefix", "prefix_int",
    "split_node", "trusted_walk", "xff_hops",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_pton = socket.inet_pton
_ntop = socket.inet_ntop
_AF4 = socket.AF_INET
_AF6 = socket.AF_INET6
_MAPPED = b"\x00" * 10 + b"\xff\xff"
_ADDRESS = (IPv4Address, IPv6Address)
_STR_OR_ADDRESS = (str, IPv4Address, IPv6Address)


# -- parsing ---------------------------------------------------------------------------------
def ip_to_int(ip: object) -> tuple[int, int] | None:
    """(version, integer) of an address; IPv4-mapped IPv6 counts as IPv4. None if not one.

    Accepts str (zone ids ``%eth0`` are dropped), bytes of length 4/16, or ipaddress objects.
    """
    try:
        if isinstance(ip, str):
            if ":" not in ip:
                return 4, int.from_bytes(_pton(_AF4, ip))
            packed = _pton(_AF6, ip.split("%", 1)[0])
        elif isinstance(ip, IPv4Address):
            return 4, int(ip)
        elif isinstance(ip, IPv6Address):
            packed = ip.packed
        elif isinstance(ip, bytes | bytearray) and len(ip) in (4, 16):
            packed = bytes(ip)
            if len(packed) == 4:
                return 4, int.from_bytes(packed)
        else:
            return None
        if packed[:12] == _MAPPED:
            return 4, int.from_bytes(packed[12:])
        return 6, int.from_bytes(packed)
    except (OSError, ValueError, TypeError):
        return None


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


def _token_int(token: str) -> tuple[int, int] | None:
    """ip_to_int of a header token: quotes, brackets, port and zone id are stripped."""
    return ip_to_int(split_node(token.strip().strip('"'))[0].split("%", 1)[0])


def _address(parsed: tuple[int, int] | None) -> IPAddress | None:
    if parsed is None:
        return None
    return IPv4Address(parsed[1]) if parsed[0] == 4 else IPv6Address(parsed[1])


def parse_ip(value: str | IPAddress) -> IPAddress | None:
    """An address from a header token (``"[2001:db8::5]:80"``, ``192.0.2.1:443``) or an
    address object; IPv4-mapped IPv6 becomes IPv4. None if not an IP."""
    if isinstance(value, str):
        return _address(_token_int(value))
    if isinstance(value, IPv6Address):
        return value.ipv4_mapped or value
    return value if isinstance(value, IPv4Address) else None


def node_address(node: str) -> str | None:
    """The canonical IP address in a node (`1.2.3.4:80`, `[::1]:80`, `::1`), None if not an IP.
    Unlike `parse_ip`, an IPv4-mapped address keeps its IPv6 text."""
    try:
        host, _ = split_node(node)
        return str(ip_address(host.split("%", 1)[0]))
    except (ValueError, TypeError):
        return None


# -- private ranges (never geolocated) -------------------------------------------------------
_V4_RANGES = (
    "0.0.0.0/8",  # "this network", includes the unspecified address
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # RFC 1918
    "192.0.0.0/24",  # IETF protocol assignments
    "192.168.0.0/16",  # RFC 1918
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, includes limited broadcast 255.255.255.255
)
_V6_RANGES = (
    "::/8",  # unspecified, loopback, deprecated IPv4-compatible (::ffff:0:0/96 is unmapped first)
    "100::/64",  # discard-only
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # deprecated site-local
    "ff00::/8",  # multicast
)


def is_private_address(ip: str | IPAddress) -> bool:
    """True for private, loopback, link-local, shared (CGNAT), reserved, unspecified and
    multicast addresses, which hydraguard never geolocates. Documentation ranges are NOT
    private. Raises ValueError for anything that is not an address (str or ipaddress object)."""
    parsed = ip_to_int(ip) if isinstance(ip, _STR_OR_ADDRESS) else None
    if parsed is None:
        raise ValueError(f"not an IP address: {ip!r}")
    version, n = parsed
    starts, ends = _PRIVATE_V4 if version == 4 else _PRIVATE_V6
    i = bisect_right(starts, n) - 1
    return i >= 0 and n <= ends[i]


def classify(ip: str | IPAddress) -> tuple[Any, bool]:
    """Fast path of geo lookups: (value to hand to maxminddb, is_private).

    A string stays a string (IPv4-mapped IPv6 becomes the dotted IPv4 string, a zone id is
    dropped); an object is unmapped. Raises ValueError for anything that is not an address.
    Strings are parsed as in `ip_to_int`, inlined (this runs on every GeoIP cache miss)."""
    if isinstance(ip, str):
        try:
            if ":" not in ip:
                n = int.from_bytes(_pton(_AF4, ip))
                i = bisect_right(_PRIVATE_V4[0], n) - 1
                return ip, (i >= 0 and n <= _PRIVATE_V4[1][i])
            s = ip.split("%", 1)[0] if "%" in ip else ip
            b = _pton(_AF6, s)
        except (OSError, ValueError):  # ValueError: embedded NUL
            raise ValueError(f"not an IP address: {ip!r}") from None
        n = int.from_bytes(b)
        if n >> 32 == 0xFFFF:  # IPv4-mapped
            n &= 0xFFFFFFFF
            i = bisect_right(_PRIVATE_V4[0], n) - 1
            return _ntop(_AF4, b[12:]), (i >= 0 and n <= _PRIVATE_V4[1][i])
        i = bisect_right(_PRIVATE_V6[0], n) - 1
        return s, (i >= 0 and n <= _PRIVATE_V6[1][i])
    addr = parse_ip(ip) if isinstance(ip, _ADDRESS) else None
    if addr is None:
        raise ValueError(f"not an IP address: {ip!r}")
    return addr, is_private_address(addr)


# -- network prefixes ------------------------------------------------------------------------
def prefix_int(version: int, n: int, bits: int | None = None) -> int:
    """The network number (``n >> (width - bits)``) of address integer ``n``'s /bits network;
    /24 for IPv4 and /64 for IPv6 unless ``bits`` says otherwise."""
    if bits is None:
        return n >> 8 if version == 4 else n >> 64
    width = 32 if version == 4 else 128
    if not 0 <= bits <= width:
        raise ValueError(f"prefix length {bits} out of range for IPv{version}")
    return n >> (width - bits)


def prefix(ip: IPAddress | None, bits: int | None = None) -> str | None:
    """The network holding ``ip`` as text (``192.0.2.0/24``, ``2001:db8:1:2::/64`` by default;
    ``bits`` overrides the length). None for None."""
    if ip is None:
        return None
    version = ip.version
    n = prefix_int(version, int(ip), bits)
    if version == 4:
        if bits is None:  # the hot path: no shift back, the last byte is 0
            return f"{n >> 16}.{n >> 8 & 255}.{n & 255}.0/24"
        n <<= 32 - bits
        return f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}/{bits}"
    if bits is None:
        bits = 64
    return f"{IPv6Address(n << (128 - bits))}/{bits}"


# -- CIDR sets -------------------------------------------------------------------------------
def _merge(ranges: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    ranges.sort()
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in ranges:
        if ends and lo <= ends[-1] + 1:
            if hi > ends[-1]:
                ends[-1] = hi
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


class CidrSet:
    """Immutable set of IPv4 and IPv6 networks merged into sorted ranges; O(log n) `contains`.

    IPv4-mapped IPv6 addresses are looked up as IPv4. Invalid addresses are not contained.
    """

    __slots__ = ("_v4_ends", "_v4_starts", "_v6_ends", "_v6_starts", "size")

    def __init__(self, networks: Iterable[IPNetwork | str] = ()) -> None:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        count = 0
        for net in networks:
            if isinstance(net, str):
                try:
                    net = ip_network(net, strict=False)
                except ValueError:
                    continue
            lo, hi = int(net.network_address), int(net.broadcast_address)
            if net.version == 6 and net.prefixlen >= 96 and (lo >> 32) == 0xFFFF:
                v4.append((lo & 0xFFFFFFFF, hi & 0xFFFFFFFF))  # ::ffff:0:0/96 subnets
            (v4 if net.version == 4 else v6).append((lo, hi))
            count += 1
        self._v4_starts, self._v4_ends = _merge(v4)
        self._v6_starts, self._v6_ends = _merge(v6)
        self.size = count  #: number of networks given (before merging)

    def contains(self, ip: object) -> bool:
        """True if the address (str, bytes or ipaddress object) is in one of the networks."""
        parsed = ip_to_int(ip)
        if parsed is None:
            return False
        version, x = parsed
        if version == 4:
            starts, ends = self._v4_starts, self._v4_ends
        else:
            starts, ends = self._v6_starts, self._v6_ends
        i = bisect_right(starts, x) - 1
        return i >= 0 and x <= ends[i]

    __contains__ = contains

    def contains_int(self, version: int, x: int) -> bool:
        """`contains` for an already parsed (version, integer), as `ip_to_int` returns."""
        if version == 4:
            starts, ends = self._v4_starts, self._v4_ends
        else:
            starts, ends = self._v6_starts, self._v6_ends
        i = bisect_right(starts, x) - 1
        return i >= 0 and x <= ends[i]

    @property
    def ranges(self) -> int:
        """Number of merged ranges (v4 + v6)."""
        return len(self._v4_starts) + len(self._v6_starts)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"CidrSet(networks={self.size}, ranges={self.ranges})"


_PRIVATE = CidrSet(_V4_RANGES + _V6_RANGES)
_PRIVATE_V4 = (_PRIVATE._v4_starts, _PRIVATE._v4_ends)  # read inline by the hot paths
_PRIVATE_V6 = (_PRIVATE._v6_starts, _PRIVATE._v6_ends)


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
