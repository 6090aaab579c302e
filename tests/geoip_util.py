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


def build_city(out_dir: Path, *, build_epoch: int | None = None,
               description: str | None = None) -> Path:
    """A City database built by geoip/build.py from the demo source into `out_dir`
    (`demo-city.mmdb`); `description` other than None makes it a non-demo database."""
    build = load_build()
    src = build.load_source()
    if build_epoch is not None:
        src["build_epoch"] = build_epoch
    return build.build_one(src, "demo-city.mmdb", out_dir, description=description)


def tree_bytes(path: Path) -> int:
    """Size of the search tree at the start of a database file."""
    import maxminddb

    with maxminddb.open_database(str(path)) as r:
        m = r.metadata()
        return m.node_count * m.record_size // 4


def overwrite(path: Path, offset: int, data: bytes) -> None:
    """Damage a file in place (same size), as a non-atomic copy over a running file would."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def damage_record(path: Path, text: bytes = b"Pyongyang") -> None:
    """Damage one string of one record (default: the KP city name) in the data section, so
    the file opens and most lookups work but those reaching that record fail."""
    at = path.read_bytes().index(text)
    overwrite(path, at - 1, b"\xff" * (len(text) + 1))  # control byte and the string
