"""Address parsing and the "never look this up" test.

Deliberately NOT ``ipaddress``'s ``is_private``/``is_global``: those treat the documentation
ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) as private, but
hydraguard's demo and tests geolocate exactly those ranges.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never looked up: not a real client location.
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


def _table(ranges: tuple[str, ...]) -> tuple[list[int], list[int]]:
    nets = sorted(ipaddress.ip_network(r) for r in ranges)
    return [int(n.network_address) for n in nets], [int(n.broadcast_address) for n in nets]


_V4_STARTS, _V4_ENDS = _table(_V4_RANGES)
_V6_STARTS, _V6_ENDS = _table(_V6_RANGES)


def parse_ip(ip: str | IPAddress) -> IPAddress:
    """Parse and normalise: IPv4-mapped IPv6 (``::ffff:192.0.2.1``, as seen on dual-stack
    sockets) becomes the IPv4 address. Raises ValueError for anything that is not an address."""
    if isinstance(ip, str):
        addr: IPAddress = ipaddress.ip_address(ip)
    elif isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        addr = ip
    else:
        raise ValueError(f"not an IP address: {ip!r}")
    if addr.version == 6:
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return mapped
    return addr


def _is_private_parsed(addr: IPAddress) -> bool:
    n = int(addr)
    if addr.version == 4:
        i = bisect_right(_V4_STARTS, n) - 1
        return i >= 0 and n <= _V4_ENDS[i]
    i = bisect_right(_V6_STARTS, n) - 1
    return i >= 0 and n <= _V6_ENDS[i]


def is_private_address(ip: str | IPAddress) -> bool:
    """True for private, loopback, link-local, shared (CGNAT), reserved, unspecified and
    multicast addresses, which hydraguard never geolocates. Documentation ranges are NOT
    private here. IPv4-mapped IPv6 addresses are judged as their IPv4 address."""
    return _is_private_parsed(parse_ip(ip))


_pton = socket.inet_pton
_ntop = socket.inet_ntop
_AF4 = socket.AF_INET
_AF6 = socket.AF_INET6


def classify(ip: str | IPAddress) -> tuple[Any, bool]:
    """Fast path used by lookups: (value to hand to maxminddb, is_private).

    Strings are parsed with inet_pton (several times cheaper than ipaddress); IPv4-mapped
    IPv6 becomes the dotted IPv4 string; an IPv6 zone id ("%eth0") is dropped.
    Raises ValueError for anything that is not an address."""
    if isinstance(ip, str):
        try:
            n = int.from_bytes(_pton(_AF4, ip))
        except OSError:
            s = ip.split("%", 1)[0] if "%" in ip else ip
            try:
                b = _pton(_AF6, s)
            except (OSError, ValueError):
                raise ValueError(f"not an IP address: {ip!r}") from None
            n = int.from_bytes(b)
            if n >> 32 != 0xFFFF:
                i = bisect_right(_V6_STARTS, n) - 1
                return s, (i >= 0 and n <= _V6_ENDS[i])
            n &= 0xFFFFFFFF
            ip = _ntop(_AF4, b[12:])
        except ValueError:  # embedded NUL
            raise ValueError(f"not an IP address: {ip!r}") from None
        i = bisect_right(_V4_STARTS, n) - 1
        return ip, (i >= 0 and n <= _V4_ENDS[i])
    addr = parse_ip(ip)
    return addr, _is_private_parsed(addr)
