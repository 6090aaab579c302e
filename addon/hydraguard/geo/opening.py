"""Opening one MaxMind-format database file: metadata, layout fit for its roles, and a
structure check (geo/verify.py) before anything looks an address up in it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

from . import verify as _verify
from .layouts import DECODERS, LAYOUT_ROLES, ROLES, detect_layout
from .verify import StructureError, Verification

Sig = tuple[int, int, int] | None  # (mtime_ns, size, inode); None = missing
VERIFY_SECONDS = 5.0  # default time budget of the structural walk, per file


class GeoDatabaseError(Exception):
    """A database file is missing, unreadable, corrupt, or of a layout unfit for its role."""


@dataclass(frozen=True, slots=True)
class Opened:
    """An open, checked database file."""

    reader: Any  # maxminddb Reader (C extension when available)
    layout: str
    database_type: str
    build_epoch: int
    node_count: int
    ip_version: int
    record_size: int
    sig: Sig
    description: str = ""
    demo: bool = False  # a hydraguard demo database (fictional data, documentation ranges)
    verification: Verification | None = None


def stat_sig(path: Path) -> Sig:
    """(mtime_ns, size, inode) of a file: a new version changes it; None when missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def open_checked(path: str | os.PathLike[str], roles: tuple[str, ...] = (),
                 mode: int = maxminddb.MODE_AUTO, *, verify_seconds: float = VERIFY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> Opened:
    """Open a database fully and validate it: metadata, layout fit for every role, and its
    structure (search tree scan, spread lookups, a walk over the tree decoding every record
    for up to `verify_seconds`; see geo/verify.py). Blocking: never call it in a request.
    Raises GeoDatabaseError naming the file and the reason."""
    p = Path(path)
    sig = stat_sig(p)
    if sig is None:
        raise GeoDatabaseError(f"GeoIP database {p}: file not found or not readable")
    try:
        reader = maxminddb.open_database(os.fspath(p), mode)
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
        raise GeoDatabaseError(f"GeoIP database {p}: not a valid MaxMind DB file ({exc})") from exc
    try:
        meta = reader.metadata()
        if meta.binary_format_major_version != 2 or meta.ip_version not in (4, 6):
            raise GeoDatabaseError(
                f"GeoIP database {p}: unsupported format "
                f"(v{meta.binary_format_major_version}, ip_version {meta.ip_version})")
        if meta.node_count <= 0:
            raise GeoDatabaseError(f"GeoIP database {p}: empty search tree")
        key = os.fspath(p.resolve())
        checked = _verify.remembered(key, sig, verify_seconds)
        if checked is None:
            _verify.scan_tree(p, int(meta.node_count), int(meta.record_size))
        first = next(iter(reader), None)  # walks to the first record and decodes it
        sample = first[1] if first else None
        layout = detect_layout(meta.database_type, sample)
        for role in roles:
            if role not in LAYOUT_ROLES[layout]:
                raise GeoDatabaseError(
                    f"GeoIP database {p}: a {layout!r} database ({meta.database_type}) "
                    f"cannot serve as {role!r}")
        if checked is None:
            decoders = tuple(DECODERS[(r, layout)] for r in ROLES
                             if r in LAYOUT_ROLES[layout])
            checked = _verify.check_records(reader, decoders, verify_seconds, clock)
            _verify.remember(key, sig, verify_seconds, checked)
        return Opened(reader, layout, meta.database_type, int(meta.build_epoch),
                       int(meta.node_count), int(meta.ip_version), int(meta.record_size), sig,
                       _verify.description(meta), _verify.is_demo(meta), checked)
    except GeoDatabaseError:
        reader.close()
        raise
    except StructureError as exc:
        reader.close()
        raise GeoDatabaseError(f"GeoIP database {p}: corrupt ({exc})") from exc
    except Exception as exc:
        reader.close()
        raise GeoDatabaseError(f"GeoIP database {p}: corrupt ({type(exc).__name__}: {exc})"
                               ) from exc


