"""The true client address: forwarding headers are believed only from trusted proxies.

Only the header(s) named in `settings.client_ip_headers` are read (default: X-Forwarded-For
alone). A load balancer appends to the header it writes and passes every other header through
untouched, so a second forwarding header is whatever the client chose to send: consulting it
by default would let anyone pick their own address. When a trusted peer sends both forwarding
headers and they name different clients, the configured header wins and `conflict` is set
(the `headers.forwarding_conflict` signal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from .addresses import CidrSet, IPAddress, IPNetwork, header_hops, trusted_walk

Header = Callable[[str], str | None]

FORWARDING = ("x-forwarded-for", "forwarded")
"""Every header a client address can be read from (the choices of `client_ip_headers`)."""
DEFAULT_HEADERS = ("x-forwarded-for",)


class ClientAddress(NamedTuple):
    """Who sent a request, and from which header that was read."""

    ip: IPAddress | None
    source: str  # "peer" or the forwarding header the address came from
    conflict: bool = False  # another forwarding header names another client


class ClientIpResolver:
    """Walks forwarding headers right to left from a trusted peer (nginx real_ip_recursive)."""

    def __init__(self, trusted: Sequence[IPNetwork],
                 headers: Sequence[str] = DEFAULT_HEADERS) -> None:
        """`headers`: the forwarding headers to read, in order; the first present is used
        (list first the one your load balancer appends to)."""
        self.trusted = tuple(trusted)
        self.headers = tuple(headers)
        self._trusted = CidrSet(self.trusted)

    def is_trusted(self, ip: IPAddress) -> bool:
        return self._trusted.contains(ip)

    def resolve(self, peer: IPAddress | None, header: Header) -> tuple[IPAddress | None, str]:
        """(client address, source). `header(name)` returns the joined header value or None."""
        found = self.examine(peer, header)
        return found.ip, found.source

    def examine(self, peer: IPAddress | None, header: Header) -> ClientAddress:
        """The client address, its source, and whether another forwarding header disagrees."""
        if peer is None or not self.trusted or not self._trusted.contains(peer):
            return ClientAddress(peer, "peer")
        for name in self.headers:
            value = header(name)
            if not value:
                continue
            # an unknown / obfuscated / garbage hop stops the walk at the last good one
            client = self._walk(name, value) or peer
            return ClientAddress(client, name, self._disagrees(name, client, header))
        return ClientAddress(peer, "peer")

    def _walk(self, name: str, value: str) -> IPAddress | None:
        return trusted_walk(header_hops(name, value), self._trusted)[0]

    def _disagrees(self, used: str, client: IPAddress, header: Header) -> bool:
        """Another forwarding header is present and its walk ends at another address."""
        for name in FORWARDING:
            if name == used:
                continue
            value = header(name)
            if value:
                other = self._walk(name, value)
                if other is not None and other != client:
                    return True
        return False
