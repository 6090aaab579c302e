"""Fills request facts with proxy / coordination signals (issue #4). Pure CPU, bounded memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .facts import Facts


class Indicators:
    """All configured indicators. `observe` adds named signals to `facts.signals`."""

    def __init__(self, settings: Any, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock

    def client_hello(self, client_hello: Any) -> str | None:
        """JA4 of a TLS ClientHello (None when TLS indicators are off)."""
        return None

    def observe(self, facts: Facts, req: Any, parsed: Any) -> None:
        """Add signals for one request (req: pipeline.RequestView, parsed: apis.ParsedRequest)."""

    def close(self) -> None:
        """Release files and caches."""
