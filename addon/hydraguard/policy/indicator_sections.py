"""Rules-file sections for the proxy indicators (`indicators:`). Filled in by issue #4."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .schema import Errors, Field

SECTIONS: dict[str, Field] = {}


def compile_indicators(checked: dict[str, Any], errors: Errors, base: Path) -> Any:
    """The compiled indicator settings (None: indicators off)."""
    return None
