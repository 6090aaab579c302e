"""IP addresses in one place (stdlib only): parsing, private ranges, network prefixes, CIDR sets
and list files, and the X-Forwarded-For / Forwarded (RFC 7239) hop walk.

IPv4-mapped IPv6 (``::ffff:a.b.c.d``, seen on dual-stack sockets) counts as IPv4, except in the
canonical text of `node_address` / `parse_xff`. "Private" is deliberately NOT ``ipaddress``'s
``is_private``: the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32) are public here, because hydraguard's demo and tests geolocate them.
Nothing raises on bad input except where a docstring says so.

One home, four modules: `core` (parsing, private ranges, prefixes, `CidrSet`), `lists`
(CIDR list files), `forwarding` (Forwarded / X-Forwarded-For hops and the trusted walk).
Import names from `hydraguard.addresses`.
"""

from .core import (
    CidrSet,
    IPAddress,
    IPNetwork,
    classify,
    ip_to_int,
    is_private_address,
    node_address,
    parse_ip,
    prefix,
    prefix_int,
    split_node,
)
from .forwarding import (
    format_forwarded,
    forwarded_hops,
    header_hops,
    parse_forwarded,
    parse_xff,
    trusted_walk,
    xff_hops,
)
from .lists import FORMATS, parse_list

__all__ = [
    "FORMATS", "CidrSet", "IPAddress", "IPNetwork", "classify", "format_forwarded",
    "forwarded_hops", "header_hops", "ip_to_int", "is_private_address", "node_address",
    "parse_forwarded", "parse_ip", "parse_list", "parse_xff", "prefix", "prefix_int",
    "split_node", "trusted_walk", "xff_hops",
]

