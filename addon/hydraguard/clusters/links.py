"""The link-store interface and its in-memory implementation.

A link store answers "which linked cluster is this account in?" after recording the
request's evidence. `MemoryLinks` keeps the union-find in this process (clusters/linker.py);
`RedisLinks` (clusters/redis_links.py) shares it between replicas and keeps a `MemoryLinks`
as its answer while Redis is unavailable. Both are chosen in one factory
(budgets/backends.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from .linker import ClusterLinker, LinkRule

if TYPE_CHECKING:
    from .view import MemoryLinkView

Evidence = Mapping[str, str | None]  # kind ("ip", "prefix", "tls_ua", "template") -> value
LinkSettings = tuple[float, int, tuple[LinkRule, ...]]  # window_s, max_nodes, rules


class LinkStore(Protocol):
    """Hydra linking for one cluster definition."""

    def observe(self, account: str, evidence: Evidence) -> str:
        """Record the evidence; the best cluster id known here right now (sync, CPU only)."""
        ...

    def confirm(self, account: str, evidence: Evidence) -> Awaitable[str | None] | None:
        """The id all replicas agree on, when the store is shared (None: nothing to wait
        for). Awaiting it never raises; it gives None when the shared store is down."""
        ...

    @property
    def settings(self) -> LinkSettings:
        """What it was built for: a reload keeps a store whose settings did not change."""
        ...


class MemoryLinks:
    """Linking in this process only."""

    def __init__(self, window_s: float, max_nodes: int, rules: tuple[LinkRule, ...],
                 clock: Callable[[], float]) -> None:
        self.settings: LinkSettings = (float(window_s), int(max_nodes), tuple(rules))
        self.linker = ClusterLinker(window_s, max_nodes, rules, clock)

    def observe(self, account: str, evidence: Evidence) -> str:
        self.linker.observe(account, evidence)
        return self.linker.cluster_of(account)

    def confirm(self, account: str, evidence: Evidence) -> None:
        return None

    def view(self) -> MemoryLinkView:
        """Read-only view for the admin listener (clusters/view.py)."""
        from .view import MemoryLinkView

        return MemoryLinkView(self.linker)
