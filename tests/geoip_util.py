"""geoip/build.py (a script, not part of the package) loaded as a module for the tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

GEOIP = Path(__file__).resolve().parents[1] / "geoip"


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hydraguard_geoip_build", GEOIP / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
