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

from ..policy.budget_model import LinkConfig
from .linker import ClusterLinker

if TYPE_CHECKING:
    from .view import MemoryLinkView

# kind ("ip", "prefix", "asn", "tls_ua", "template") -> value
Evidence = Mapping[str, str | None]
LinkSettings = LinkConfig


class LinkStore(Protocol):
    """Hydra linking for one cluster definition."""

    def observe(self, account: str, evidence: Evidence, *, flagged: bool = False) -> str:
        """Record the evidence (seen through a flagged network or not); the best cluster id
        known here right now (sync, CPU only)."""
        ...

    def confirm(self, account: str, evidence: Evidence, *, flagged: bool = False
                ) -> Awaitable[str | None] | None:
        """The id all replicas agree on, when the store is shared (None: nothing to wait
        for). Awaiting it never raises; it gives None when the shared store is down."""
        ...

    def link_info(self, account: str) -> dict[str, object] | None:
        """The decision log's ``link`` object of the account's last answer (None: not
        linked): cluster size and the pair that linked it (kinds, score, age)."""
        ...

    @property
    def settings(self) -> LinkSettings:
        """What it was built for: a reload keeps a store whose settings did not change."""
        ...

    def stats(self) -> dict[str, object]:
        """Sizes of its bounded structures (the status file), cheap to compute."""
        ...


class MemoryLinks:
    """Linking in this process only."""

    def __init__(self, config: LinkConfig, clock: Callable[[], float]) -> None:
        self.settings: LinkSettings = config
        self.linker = ClusterLinker(config=config, clock=clock)

    def observe(self, account: str, evidence: Evidence, *, flagged: bool = False) -> str:
        self.linker.observe(account, evidence, flagged=flagged)
        return self.linker.cluster_of(account)

    def confirm(self, account: str, evidence: Evidence, *, flagged: bool = False) -> None:
        return None

    def link_info(self, account: str) -> dict[str, object] | None:
        return self.linker.link_info(account)

    def stats(self) -> dict[str, object]:
        return {"backend": "memory", **self.linker.stats()}

    def view(self) -> MemoryLinkView:
        """Read-only view for the admin listener (clusters/view.py)."""
        from .view import MemoryLinkView

        return MemoryLinkView(self.linker)
