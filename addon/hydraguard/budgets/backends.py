"""The one factory of state backends: budget state and link stores, memory or Redis.

`open_backends(config, clock)` builds what a policy's ``state:`` section asks for;
`open_backends(config, clock, previous=...)` (hot reload) keeps the previous budget state
when the ``state:`` settings did not change, and each link store whose cluster definition
kept its id and ``link:`` settings, so budget levels and link evidence survive the reload.
Redis modules are imported only when the Redis backend is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..clusters.links import LinkStore, MemoryLinks
from .history import AccountHistory
from .memory import MemoryBudgetState
from .records import MemoryRecords, RecordStore
from .spec import BudgetState

if TYPE_CHECKING:
    from ..policy.budget_model import BudgetsConfig, StateConfig

__all__ = ["DEFAULT_REDIS_URL", "Backends", "open_backends", "open_state"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url(cfg: StateConfig) -> str:
    """The Redis URL of a ``state:`` section (its own, else its environment variable)."""
    return cfg.redis_url or os.environ.get(cfg.redis_url_env or "", "") or DEFAULT_REDIS_URL


def open_state(cfg: StateConfig, clock: Callable[[], float]) -> BudgetState:
    """The budget state of a ``state:`` section (nothing is connected yet)."""
    if cfg.backend == "redis":
        from .redis_state import RedisBudgetState

        return RedisBudgetState(
            redis_url(cfg), prefix=cfg.prefix, timeout_ms=cfg.timeout_ms,
            on_error=cfg.on_error, clock=clock, reservation_ttl_s=cfg.reservation_ttl_s,
            replicas=cfg.replicas, down_backoff_s=cfg.retry_after_s,
            closed_retry_after_s=cfg.retry_after_s, max_connections=cfg.max_connections,
            max_keys=cfg.max_keys, cluster=cfg.cluster)
    return MemoryBudgetState(cfg.max_keys, clock)


@dataclass(slots=True)
class Backends:
    """The state a policy's budgets and linking run on."""

    config: BudgetsConfig | None = None
    state: BudgetState | None = None  # None: no budgets
    links: dict[str, LinkStore] = field(default_factory=dict)  # cluster definition id -> store
    history: AccountHistory | None = None  # accounts' first seen / served: probation budgets
    records: RecordStore | None = None  # batch charges and batch input file estimates

    async def close(self) -> None:
        if self.state is not None:
            await self.state.close()


def _records(state: BudgetState | None, clock: Callable[[], float],
             previous: Backends | None) -> RecordStore:
    """Batch records on the shared state when it is Redis, else in memory (kept over a
    reload when the state is kept)."""
    old = previous.records if previous is not None else None
    if state is not None and type(state).__name__ == "RedisBudgetState":
        if old is not None and getattr(old, "state", None) is state:
            return old
        from .redis_records import RedisRecords

        return RedisRecords(state)  # type: ignore[arg-type]
    if isinstance(old, MemoryRecords):
        return old
    return MemoryRecords(clock)


def open_backends(config: BudgetsConfig | None, clock: Callable[[], float], *,
                  previous: Backends | None = None) -> Backends:
    """Budget state and link stores for ``config`` (see module doc for ``previous``)."""
    if config is None:
        return Backends(records=_records(None, clock, previous))
    prev_cfg = previous.config if previous is not None else None
    state = None
    if config.budgets:
        if previous is not None and previous.state is not None and prev_cfg is not None \
                and prev_cfg.state == config.state:
            state = previous.state
        else:
            state = open_state(config.state, clock)
    shared = None
    if state is not None and config.state.backend == "redis":
        from ..clusters.redis_links import RedisLinks

        shared = RedisLinks
    links: dict[str, LinkStore] = {}
    for c in config.clusters:
        if c.link is None:
            continue
        old = previous.links.get(c.id) if previous is not None else None
        if old is not None and old.settings == c.link and (
                shared is None) == isinstance(old, MemoryLinks) and (
                shared is None or getattr(old, "state", None) is state):
            links[c.id] = old
        elif shared is not None:
            links[c.id] = shared(state, c.id, c.link, clock=clock)
        else:
            links[c.id] = MemoryLinks(c.link, clock)
    history = None
    if any(b.probation is not None for b in config.budgets):
        history = previous.history if previous is not None else None
        if history is None:
            history = AccountHistory(clock)
    return Backends(config, state, links, history, _records(state, clock, previous))
