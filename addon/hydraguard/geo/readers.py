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
from . import verify as _verify
from .info import LOCATION_FAILED, PRIVATE, GeoInfo
from .layouts import DECODERS, ROLES, Decoder
from .opening import VERIFY_SECONDS, GeoDatabaseError, Opened, open_checked, stat_sig

log = logging.getLogger("hydraguard.geo")

_NOTHING = object()
MAX_AGE_DAYS = 45  # default age past which a database is reported stale
ERROR_LOG_EVERY = 60.0  # seconds between two log lines about the same failing lookup


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
    opened: Opened | None = None
    bad_sig: object = _NOTHING  # signature of the last version we complained about
    last_error: str | None = None


_LOC_NONE: tuple[Any, ...] = (None, None, None, None, None, (), False, None, None)
_ASN_NONE: tuple[Any, ...] = (None, None)
_ANON_NONE: tuple[Any, ...] = (frozenset(), None, None)
_MEMO_MAX = 65536


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
        verify_seconds: float = VERIFY_SECONDS,
        max_age_days: float = MAX_AGE_DAYS,
    ) -> None:
        unknown = set(paths) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown GeoIP database role(s) {sorted(unknown)}; use {ROLES}")
        self._check_interval = float(check_interval)
        self._clock = clock
        self._cache_size = cache_size
        self._auto_reload = auto_reload
        self._mode = mode
        self._verify_seconds = float(verify_seconds)
        self.max_age_days = float(max_age_days)
        self._error_logged: dict[str, tuple[float, int]] = {}  # text -> (when, suppressed)
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
                f.opened = open_checked(f.path, f.roles, mode, verify_seconds=verify_seconds)
            except GeoDatabaseError as exc:
                if not optional:
                    self._close_all()
                    raise
                f.last_error = str(exc)
                f.bad_sig = stat_sig(f.path)
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
        error = None
        db = st.location
        if db is not None:
            try:
                rec = db[0].get(key)
                if rec is not None:
                    loc = db[1](rec)
                    found = True
            except Exception as exc:  # a damaged file: its own state, never "no record"
                error = self._failed("location", db[0], key, exc)
        asn = _ASN_NONE
        db = st.asn
        if db is not None:
            try:
                rec = db[0].get(key)
                if rec is not None:
                    asn = db[1](rec)
            except Exception as exc:
                error = _join(error, self._failed("asn", db[0], key, exc))
        if asn[0] is None:
            asn = loc[7:]  # ASN carried by the location db (IPinfo Lite), if any
        anon = _ANON_NONE
        db = st.anonymous
        if db is not None:
            try:
                rec = db[0].get(key)
                if rec is not None:
                    anon = db[1](rec)
            except Exception as exc:
                error = _join(error, self._failed("anonymous", db[0], key, exc))
        # Building a frozen dataclass costs more than the lookup itself: reuse equal results.
        memo_key = (found, loc, asn, anon, error)
        memo = self._memo
        info = memo.get(memo_key)
        if info is None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            info = memo[memo_key] = GeoInfo(found, *loc[:7], False, *asn, *anon, error)
        return info

    def _failed(self, role: str, reader: Any, addr: Any, exc: Exception) -> str | None:
        """The GeoInfo.error text of a failed lookup, or None when it only means "no record"
        (an IPv6 address in an IPv4-only database). Logged at most once a minute per text."""
        if type(exc) is ValueError and ":" in str(addr) and _ipv4_only(reader):
            return None
        text = str(exc) or type(exc).__name__
        a = str(addr)
        if a in text:  # maxminddb names the address: keep the texts (and the memo) few
            head, sep, tail = text.partition(". ")
            text = tail if sep and a in head else text.replace(a, "<address>")
        if role == "location":
            text = f"{LOCATION_FAILED}: {text}"
        else:
            text = f"{role} lookup failed: {text}"
        now = self._clock()
        last = self._error_logged.get(text)
        if last is not None and now - last[0] < ERROR_LOG_EVERY:
            self._error_logged[text] = (last[0], last[1] + 1)
            return text
        if len(self._error_logged) >= 64:
            self._error_logged.clear()
        self._error_logged[text] = (now, 0)
        more = f" ({last[1]} more since the last report)" if last and last[1] else ""
        log.error("GeoIP %s, e.g. for %s%s: the database file is damaged; region rules take "
                  "their lookup_error outcome", text, addr, more)
        return text

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
        sig = stat_sig(f.path)
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
            new = open_checked(f.path, f.roles, self._mode, verify_seconds=self._verify_seconds)
        except GeoDatabaseError as exc:
            f.bad_sig = sig
            f.last_error = str(exc)
            log.error("%s; %s", exc, keeping)
            return False
        # the old reader is released when the last in-flight lookup drops its reference
        f.opened, f.bad_sig, f.last_error = new, _NOTHING, None
        log.info("GeoIP database %s reloaded (%s, built %s, %s)", f.path, new.database_type,
                 _iso(new.build_epoch), new.verification.summary() if new.verification else "")
        for text in self.notices(only=f):
            log.warning("%s", text)
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
                    "demo": o.demo if o else None,
                    "verified": o.verification.summary() if o and o.verification else None,
                    "error": f.last_error,
                })
        return out

    def notices(self, now: float | None = None, *, only: _File | None = None,
                demo: bool = True) -> list[str]:
        """Warnings about the loaded files: demo data (fictional, documentation ranges only:
        real addresses have no record; `demo=False` leaves those files out) and databases
        older than `max_age_days`."""
        out = []
        for f in self._files if only is None else [only]:
            o = f.opened
            if o is not None and (demo or not o.demo):
                out += _verify.notices(f"GeoIP database {f.path} ({'/'.join(f.roles)})",
                                       o.demo, o.build_epoch, self.max_age_days, now)
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


def _ipv4_only(reader: Any) -> bool:
    try:
        return reader.metadata().ip_version == 4
    except Exception:
        return False


def _join(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return f"{a}; {b}"


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")
