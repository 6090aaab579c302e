"""The true client address: forwarding headers are believed only from trusted proxies."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .addresses import CidrSet, IPAddress, IPNetwork, header_hops, trusted_walk

Header = Callable[[str], str | None]


class ClientIpResolver:
    """Walks forwarding headers right to left from a trusted peer (nginx real_ip_recursive)."""

    def __init__(self, trusted: Sequence[IPNetwork],
                 headers: Sequence[str] = ("forwarded", "x-forwarded-for")) -> None:
        self.trusted = tuple(trusted)
        self.headers = tuple(headers)
        self._trusted = CidrSet(self.trusted)

    def is_trusted(self, ip: IPAddress) -> bool:
        return self._trusted.contains(ip)

    def resolve(self, peer: IPAddress | None, header: Header) -> tuple[IPAddress | None, str]:
        """(client address, source). `header(name)` returns the joined header value or None."""
        if peer is None or not self.trusted or not self._trusted.contains(peer):
            return peer, "peer"
        for name in self.headers:
            value = header(name)
            if not value:
                continue
            # an unknown / obfuscated / garbage hop stops the walk at the last good one
            client, _ = trusted_walk(header_hops(name, value), self._trusted)
            return (peer if client is None else client), name
        return peer, "peer"
