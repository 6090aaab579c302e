"""The true client address: forwarding headers are believed only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from .facts import IPAddress

Header = Callable[[str], str | None]


def parse_ip(value: str) -> IPAddress | None:
    """An address from a header token: strips quotes, brackets and ports; None if not an IP."""
    v = value.strip().strip('"')
    if not v:
        return None
    if v.startswith("["):  # [v6] or [v6]:port
        v = v[1 : v.find("]")] if "]" in v else v[1:]
    elif v.count(":") == 1:  # v4:port
        v = v.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(v.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def xff_hops(value: str) -> list[str]:
    """Hops of an X-Forwarded-For value, left (origin) to right (nearest)."""
    return [h.strip() for h in value.split(",")]


def forwarded_hops(value: str) -> list[str]:
    """The `for=` values of an RFC 7239 Forwarded header, left to right ('' where absent)."""
    hops: list[str] = []
    for element in value.split(","):
        found = ""
        for pair in element.split(";"):
            name, _, val = pair.partition("=")
            if name.strip().lower() == "for":
                found = val.strip()
        hops.append(found)
    return hops


class ClientIpResolver:
    """Walks forwarding headers right to left from a trusted peer (nginx real_ip_recursive)."""

    def __init__(self, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
                 headers: Sequence[str] = ("forwarded", "x-forwarded-for")) -> None:
        self.trusted = tuple(trusted)
        self.headers = tuple(headers)

    def is_trusted(self, ip: IPAddress) -> bool:
        return any(ip in n for n in self.trusted)

    def resolve(self, peer: IPAddress | None, header: Header) -> tuple[IPAddress | None, str]:
        """(client address, source). `header(name)` returns the joined header value or None."""
        if peer is None or not self.trusted or not self.is_trusted(peer):
            return peer, "peer"
        for name in self.headers:
            value = header(name)
            if not value:
                continue
            hops = forwarded_hops(value) if name == "forwarded" else xff_hops(value)
            client = peer
            for hop in reversed(hops):
                ip = parse_ip(hop)
                if ip is None:  # unknown / obfuscated / garbage: stop at the last good hop
                    break
                client = ip
                if not self.is_trusted(ip):
                    break
            return client, name
        return peer, "peer"
