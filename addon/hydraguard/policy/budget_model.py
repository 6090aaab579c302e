"""Compiled `clusters:`, `budgets:` and `state:` sections: immutable plain data.

`WindowSpec` (one token-bucket window) and `LinkRule` (when shared evidence links accounts)
live here because the rules define them; the runtime (`hydraguard.budgets`,
`hydraguard.clusters`) imports them from here and re-exports them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .conditions import Condition, FactsView
from .yamlpos import Where

__all__ = [
    "EVIDENCE_DEFAULTS",
    "EVIDENCE_KINDS",
    "FLAGGED_SIGNALS",
    "NETWORK_KINDS",
    "BudgetDef",
    "BudgetsConfig",
    "ClusterDef",
    "LinkConfig",
    "LinkRule",
    "ProbationSpec",
    "StateConfig",
    "WindowSpec",
]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One budget window: a token bucket of capacity ``limit`` refilling ``limit/period_s``
    tokens per second (continuous refill, GCRA-style: no double burst at a boundary)."""

    name: str
    limit: int
    period_s: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("WindowSpec.name must not be empty")
        if not (isinstance(self.limit, int) and self.limit > 0):
            raise ValueError(f"WindowSpec.limit must be a positive int, got {self.limit!r}")
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ValueError(f"WindowSpec.period_s must be > 0, got {self.period_s!r}")

    @property
    def rate(self) -> float:
        """Refill rate in tokens per second."""
        return self.limit / self.period_s


# kind -> (weight, flagged_weight, max_accounts): the defaults of `link.evidence[]`
EVIDENCE_DEFAULTS: dict[str, tuple[float, float, int]] = {
    "ip": (0.35, 0.7, 1000),
    "prefix": (0.15, 0.3, 2000),
    "asn": (0.05, 0.3, 5000),
    "tls_ua": (0.25, 0.35, 2000),
    "template": (0.35, 0.7, 10000),
}
EVIDENCE_KINDS = tuple(EVIDENCE_DEFAULTS)  # most specific network kind first
NETWORK_KINDS = frozenset({"ip", "prefix", "asn"})  # nested: a pair counts the most specific
MIN_ACCOUNTS = 3
# signals that mark a request's network as flagged (a name ending in `*` is a prefix)
FLAGGED_SIGNALS = ("ip.residential_proxy", "ip.hosting", "ip.public_proxy", "ip.tor_exit",
                   "ip.anonymous_vpn", "ip.hosting_asn", "ip.proxy_asn", "ip.list.*")


@dataclass(frozen=True, slots=True)
class LinkRule:
    """How one kind of shared evidence counts towards linking two accounts.

    A value of ``kind`` (an exit IP, a /24, a template id, ...) counts only while
    ``min_accounts`` <= distinct accounts seen with it within the window <= ``max_accounts``.
    Shared by two accounts it adds ``weight`` to their pair score (``flagged_weight`` when
    both were seen with it through a flagged network), times its rarity
    ``min(1, log10(max_accounts / n))``: full weight up to a tenth of ``max_accounts``
    accounts, none at ``max_accounts``. ``None`` takes the kind's default
    (``EVIDENCE_DEFAULTS``)."""

    kind: str
    min_accounts: int = MIN_ACCOUNTS
    max_accounts: int | None = None
    weight: float | None = None
    flagged_weight: float | None = None

    def __post_init__(self) -> None:
        w, fw, mx = EVIDENCE_DEFAULTS.get(self.kind, (0.25, 0.35, 1000))
        if self.max_accounts is None:
            object.__setattr__(self, "max_accounts", max(mx, self.min_accounts))
        if self.weight is None:
            object.__setattr__(self, "weight", w)
        if self.flagged_weight is None:
            object.__setattr__(self, "flagged_weight", max(fw, self.weight))
        if self.min_accounts < 2:
            raise ValueError("min_accounts must be >= 2")
        if self.max_accounts < self.min_accounts:
            raise ValueError("max_accounts must be >= min_accounts")
        if not (0 <= self.weight <= self.flagged_weight):
            raise ValueError("weights must be >= 0 and weight <= flagged_weight")


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Compiled `state:`: where budget levels are kept."""

    backend: str = "memory"
    redis_url: str | None = None
    redis_url_env: str = "REDIS_URL"
    prefix: str = "hg"
    timeout_ms: float = 2000.0
    on_error: str = "open"
    retry_after_s: float = 1.0
    max_keys: int = 100_000
    reservation_ttl_s: float = 60.0
    max_connections: int = 64
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Compiled `link:` of a cluster definition (hydra linking; see clusters/linker.py)."""

    window_s: float = 3600.0
    max_nodes: int = 100_000
    rules: tuple[LinkRule, ...] = ()
    threshold: float = 1.0           # pair score from which two accounts are linked
    multi_exit_s: float = 600.0      # values of one kind add up when shared this close
    candidates: int = 8              # most recent accounts of a value a new one is scored with
    max_partners: int = 16           # scored partners remembered per account
    max_pairs: int = 200_000         # pair scores kept (least recently used dropped)
    max_why: int = 50_000            # why-records of linked accounts kept
    ipv6_exit_prefix: int = 64       # an IPv6 exit is this network (rotation inside it)
    flagged_signals: tuple[str, ...] = FLAGGED_SIGNALS


@dataclass(frozen=True, slots=True)
class ClusterDef:
    """One compiled cluster definition."""

    id: str
    key: tuple[str, ...]
    when: Condition | None = None
    link: LinkConfig | None = None
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ProbationSpec:
    """A probation budget: shared by the not-yet-established accounts of one network.

    An account is established when it is in ``known`` or when every set threshold holds:
    seen for ``min_age_s``, ``min_requests`` requests served, ``min_tokens`` tokens charged.
    Until then its requests that match the budget's ``when`` also draw from the budget under
    the key built from ``key`` (network attributes: ip, prefix, asn, country)."""

    key: tuple[str, ...] = ("asn",)
    min_age_s: float = 86_400.0
    min_requests: int = 20
    min_tokens: int = 0
    known: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class BudgetDef:
    """One compiled budget."""

    id: str
    windows: tuple[WindowSpec, ...]
    clusters: frozenset[str] | None = None  # None: every cluster definition
    when: Condition | None = None
    count: str = "total"
    w_input: float = 1.0
    w_output: float = 1.0
    w_cache_read: float = 1.0
    w_cache_creation: float = 1.0
    multipliers: tuple[tuple[str, re.Pattern[str], float], ...] = ()
    max_output_reserve: int = 4096
    default_output: int = 4096
    on_exceed: str = "throttle"
    cap_to: int | None = None
    shadow: bool = False
    reason: str = ""
    probation: ProbationSpec | None = None
    where: Where | None = field(default=None, compare=False)

    def multiplier(self, model: str | None) -> float:
        if model is not None:
            for _, rx, m in self.multipliers:
                if rx.fullmatch(model):
                    return m
        return 1.0

    def applies(self, cluster_def: str, facts: FactsView) -> bool:
        if self.clusters is not None and cluster_def not in self.clusters:
            return False
        return self.when is None or self.when.test(facts)


@dataclass(frozen=True, slots=True)
class BudgetsConfig:
    """Compiled `clusters:` + `budgets:` + `state:` (`Policy.budgets`)."""

    state: StateConfig
    clusters: tuple[ClusterDef, ...]
    budgets: tuple[BudgetDef, ...]
