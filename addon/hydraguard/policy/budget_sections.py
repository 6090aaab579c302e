"""Rules-file sections for clusters, budgets and state (`clusters:`, `budgets:`, `state:`).
Filled in by issue #5."""

from __future__ import annotations

from typing import Any

from .schema import Errors, Field

SECTIONS: dict[str, Field] = {}


def compile_budgets(checked: dict[str, Any], errors: Errors) -> Any:
    """The compiled budget settings (None: no budgets)."""
    return None
