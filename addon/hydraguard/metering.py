"""Cluster resolution and token budgets for the pipeline (issue #5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .facts import Facts


@dataclass(slots=True)
class Admission:
    """Outcome of the budget step for one request."""

    refused: bool = False
    kind: str = "rate_limit"
    reason: str = ""
    rule: str = ""
    retry_after_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)  # rate-limit headers for the client
    max_output_cap: int | None = None  # rewrite the request's output cap to this
    shadow: bool = False
    state: Any = None  # reservations etc., for settle()
    log: dict[str, Any] = field(default_factory=dict)  # fields for the decision log


class Metering:
    """Resolves clusters and reserves / settles token budgets."""

    def __init__(self, settings: Any, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock

    def resolve_cluster(self, facts: Facts) -> None:
        """Set `facts.cluster` (sync, CPU only)."""

    async def admit(self, facts: Facts) -> Admission:
        """Reserve tokens before forwarding. Never raises."""
        return Admission()

    async def settle(self, admission: Admission, usage: Any, *, failed: bool) -> dict[str, Any]:
        """Replace the reservation with real usage (or release it). Returns log fields."""
        return dict(admission.log)

    async def close(self) -> None:
        """Close state backends."""
