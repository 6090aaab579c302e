"""GeoDatabases: any mix of location / asn / anonymous MaxMind-format databases, hot-reloaded."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb
from cachetools import LRUCache

from ..addresses import IPAddress, classify
from .info import PRIVATE, GeoInfo
from .layouts import DECODERS, LAYOUT_ROLES, ROLES, Decoder, detect_layout

log = logging.getLogger("hydraguard.geo")

_Sig = tuple[int, int, int] | None  # (mtime_ns, size, inode); None = missing
_NOTHING = object()


class GeoDatabaseError(Exception):
    """A database file is missing, unreadable, corrupt, or of a layout unfit for its role."""


@dataclass(frozen=True, slots=True)
class _Opened:
    reader: Any  # maxminddb Reader (C extension when available)
    layout: str
    database_type: str
    build_epoch: int
    node_count: int
    ip_version: int
    record_size: int
    sig: _Sig


@dataclass(frozen=True, slots=True)
class _State:
    """Immutable snapshot swapped in one assignment: lookups never see a half-reloaded set."""

    location: tuple[Any, Decoder] | None
    asn: tuple[Any, Decoder] | None
    anonymous: tuple[Any, Decoder] | None


@dataclass(slots=True)
class _File:
    path: Path
    roles: tuple[str, ...]
    opened: _Opened | None = None
    bad_sig: object = _NOTHING  # signature of the last version we complained about
    last_error: str | None = None


_LOC_NONE: tuple[Any, ...] = (None, None, None, None, None, (), False, None, None)
_ASN_NONE: tuple[Any, ...] = (None, None)
_ANON_NONE: tuple[Any, ...] = (frozenset(), None, None)
_MEMO_MAX = 65536


def _stat_sig(path: Path) -> _Sig:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def open_checked(path: str | os.PathLike[str], roles: tuple[str, ...] = (),
                 mode: int = maxminddb.MODE_AUTO) -> _Opened:
    """Open a database fully and validate it (metadata, a sample record, one test lookup,
    layout fit for every role). Raises GeoDatabaseError naming the file and the reason."""
    p = Path(path)
    sig = _stat_sig(p)
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
        first = next(iter(reader), None)  # walks to the first record and decodes it
        sample = first[1] if first else None
        reader.get("192.0.2.1")  # test lookup through the tree (and the IPv4 subtree)
        layout = detect_layout(meta.database_type, sample)
        for role in roles:
            if role not in LAYOUT_ROLES[layout]:
                raise GeoDatabaseError(
                    f"GeoIP database {p}: a {layout!r} database ({meta.database_type}) "
                    f"cannot serve as {role!r}")
        return _Opened(reader, layout, meta.database_type, int(meta.build_epoch),
                       int(meta.node_count), int(meta.ip_version), int(meta.record_size), sig)
    except GeoDatabaseError:
        reader.close()
        raise
    except Exception as exc:
        reader.close()
        raise GeoDatabaseError(f"GeoIP database {p}: corrupt ({type(exc).__name__}: {exc})"
                               ) from exc


class GeoDatabases:
    """Reads any mix of: location (GeoIP2/GeoLite2 City or Country, DB-IP, IPinfo Lite), asn,
    anonymous. Layout recognised from metadata.database_type and record shape.

    Meant for one thread (mitmproxy runs addon hooks on one event loop): the LRU cache is not
    locked. Reloads are safe against concurrent lookups (one immutable snapshot is swapped).

    ``paths`` maps role -> file; one file may serve several roles (IPinfo Lite: location and
    asn). With no "asn" role, ASN data found in the location db (IPinfo Lite) is used.
    """

    def __init__(
        self,
        paths: Mapping[str, str | os.PathLike[str]],
        *,
        optional: bool = False,
        check_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 65536,
        auto_reload: bool = True,
        mode: int = maxminddb.MODE_AUTO,
    ) -> None:
        unknown = set(paths) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown GeoIP database role(s) {sorted(unknown)}; use {ROLES}")
        self._check_interval = float(check_interval)
        self._clock = clock
        self._cache_size = cache_size
        self._auto_reload = auto_reload
        self._mode = mode
        self._lock = threading.Lock()
        self._cache: LRUCache[Any, GeoInfo] | None = (
            LRUCache(maxsize=cache_size) if cache_size > 0 else None)
        # one _File per distinct path, in role order
        by_path: dict[Path, list[str]] = {}
        for role in ROLES:
            if paths.get(role) is not None:
                by_path.setdefault(Path(paths[role]), []).append(role)
        self._files = [_File(path, tuple(roles)) for path, roles in by_path.items()]
        for f in self._files:
            try:
                f.opened = open_checked(f.path, f.roles, mode)
            except GeoDatabaseError as exc:
                if not optional:
                    self._close_all()
                    raise
                f.last_error = str(exc)
                f.bad_sig = _stat_sig(f.path)
                log.error("%s; running without it (%s)", exc, "/".join(f.roles))
        self._state = self._build_state()
        self._memo: dict[tuple[Any, ...], GeoInfo] = {}
        self._next_check = clock() + self._check_interval

    # ------------------------------------------------------------------ lookup

    def lookup(self, ip: str | IPAddress) -> GeoInfo:
        """Everything known about ``ip``. Raises ValueError if it is not an IP address."""
        if self._auto_reload and self._clock() >= self._next_check:
            self.maybe_reload()
        cache = self._cache
        if cache is not None:
            try:
                return cache[ip]
            except KeyError:
                pass
        info = self._resolve(ip)
        if cache is not None:
            cache[ip] = info
        return info

    def _resolve(self, ip: str | IPAddress) -> GeoInfo:
        key, private = classify(ip)
        if private:
            return PRIVATE
        st = self._state
        found = False
        loc = _LOC_NONE
        db = st.location
        if db is not None:
            try:
                rec = db[0].get(key)
            except _LOOKUP_ERRORS as exc:
                rec = _failed(key, exc)
            if rec is not None:
                found = True
                loc = db[1](rec)
        asn = _ASN_NONE
        db = st.asn
        if db is not None:
            try:
                rec = db[0].get(key)
            except _LOOKUP_ERRORS as exc:
                rec = _failed(key, exc)
            if rec is not None:
                asn = db[1](rec)
        if asn[0] is None:
            asn = loc[7:]  # ASN carried by the location db (IPinfo Lite), if any
        anon = _ANON_NONE
        db = st.anonymous
        if db is not None:
            try:
                rec = db[0].get(key)
            except _LOOKUP_ERRORS as exc:
                rec = _failed(key, exc)
            if rec is not None:
                anon = db[1](rec)
        # Building a frozen dataclass costs more than the lookup itself: reuse equal results.
        memo_key = (found, loc, asn, anon)
        memo = self._memo
        info = memo.get(memo_key)
        if info is None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            info = memo[memo_key] = GeoInfo(found, *loc[:7], False, *asn, *anon)
        return info

    # ------------------------------------------------------------------ reload

    def maybe_reload(self) -> None:
        """At most every check_interval: reopen files whose (mtime, size, inode) changed.
        A bad new version keeps the old reader and is reported once."""
        now = self._clock()
        if now < self._next_check or not self._lock.acquire(blocking=False):
            return
        try:
            self._next_check = now + self._check_interval
            changed = False
            for f in self._files:
                changed |= self._check_file(f)
            if changed:
                self._state = self._build_state()
                if self._cache is not None:
                    self._cache = LRUCache(maxsize=self._cache_size)
        finally:
            self._lock.release()

    def _check_file(self, f: _File) -> bool:
        sig = _stat_sig(f.path)
        current = f.opened.sig if f.opened else _NOTHING
        if sig == current or sig == f.bad_sig:
            return False
        keeping = "keeping the previously loaded version" if f.opened else "still not loaded"
        if sig is None:
            f.bad_sig = None
            f.last_error = f"GeoIP database {f.path}: file missing"
            log.error("%s; %s", f.last_error, keeping)
            return False
        try:
            new = open_checked(f.path, f.roles, self._mode)
        except GeoDatabaseError as exc:
            f.bad_sig = sig
            f.last_error = str(exc)
            log.error("%s; %s", exc, keeping)
            return False
        # the old reader is released when the last in-flight lookup drops its reference
        f.opened, f.bad_sig, f.last_error = new, _NOTHING, None
        log.info("GeoIP database %s reloaded (%s, built %s)", f.path, new.database_type,
                 _iso(new.build_epoch))
        return True

    def _build_state(self) -> _State:
        slots: dict[str, tuple[Any, Decoder] | None] = dict.fromkeys(ROLES)
        for f in self._files:
            if f.opened is None:
                continue
            for role in f.roles:
                slots[role] = (f.opened.reader, DECODERS[(role, f.opened.layout)])
        return _State(**slots)

    # ------------------------------------------------------------------ info / lifecycle

    def describe(self) -> list[dict[str, Any]]:
        """One entry per configured role, for `hydraguard check` and the startup log."""
        out = []
        for f in self._files:
            o = f.opened
            for role in f.roles:
                out.append({
                    "role": role,
                    "path": str(f.path),
                    "loaded": o is not None,
                    "layout": o.layout if o else None,
                    "database_type": o.database_type if o else None,
                    "build_epoch": o.build_epoch if o else None,
                    "build_time": _iso(o.build_epoch) if o else None,
                    "node_count": o.node_count if o else None,
                    "ip_version": o.ip_version if o else None,
                    "record_size": o.record_size if o else None,
                    "error": f.last_error,
                })
        return out

    @property
    def roles(self) -> frozenset[str]:
        """Roles that currently have a loaded database."""
        st = self._state
        return frozenset(r for r in ROLES if getattr(st, r) is not None)

    def close(self) -> None:
        self._close_all()
        self._state = _State(None, None, None)
        if self._cache is not None:
            self._cache.clear()

    def _close_all(self) -> None:
        for f in self._files:
            if f.opened is not None:
                f.opened.reader.close()
                f.opened = None

    def __enter__(self) -> GeoDatabases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LOOKUP_ERRORS = (ValueError, maxminddb.InvalidDatabaseError)


def _failed(addr: Any, exc: Exception) -> None:
    """ValueError: IPv6 address in an IPv4-only database (no record). InvalidDatabaseError:
    a damaged region of an otherwise valid file (logged, treated as no record)."""
    if isinstance(exc, maxminddb.InvalidDatabaseError):
        log.warning("GeoIP lookup of %s failed: %s", addr, exc)
    return None


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")
