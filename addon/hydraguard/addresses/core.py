"""Addresses: parsing (IPv4-mapped IPv6 counts as IPv4), private ranges, network prefixes
and `CidrSet`."""

from __future__ import annotations

import socket
from bisect import bisect_right
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

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


