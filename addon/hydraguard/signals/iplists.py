"""A CIDR list file (parsed by `hydraguard.addresses.parse_list`) held as a `CidrSet`.

`ListFile` reloads the file when its (mtime, size, inode) changes and keeps the previous set
when the new content is unreadable or invalid.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from ..addresses import CidrSet, parse_list

__all__ = ["ListFile"]

log = logging.getLogger(__name__)

_NO_FILE = (-1, -1, -1)  # signature of a missing file


class ListFile:
    """A list file turned into a `CidrSet`, reloaded when the file changes.

    `check()` stats the file (at most once per `check_interval` seconds of `clock`, unless
    forced) and reloads when (mtime_ns, size, inode) differ. An unreadable file, a parse error
    (more than `max_errors` bad entries), or an empty result replacing a non-empty set keeps the
    previous set and logs one error per distinct bad file version. Call `check()` from a timer
    so the request path only reads `.cidrs`; `get()` does both for convenience.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str,
        check_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_errors: int = 0,
        *,
        auto_check: bool = True,
    ) -> None:
        """``auto_check=False``: ``get()`` never touches the file; whoever owns the list
        calls ``check()`` (the proxy does, from a worker thread)."""
        self.path = os.fspath(path)
        self.auto_check = auto_check
        self.fmt = fmt
        self.check_interval = check_interval
        self.max_errors = max_errors
        self._clock = clock
        self._sig: tuple[int, int, int] | None = None  # signature of the loaded version
        self._bad_sig: tuple[int, int, int] | None = None  # last version that failed
        self._next_check = float("-inf")
        self.cidrs: CidrSet = CidrSet()
        self.loaded = False  #: True once a version of the file was accepted
        self.last_error: str | None = None
        self.check(force=True)

    def _fail(self, sig: tuple[int, int, int], msg: str) -> None:
        self.last_error = msg
        if sig != self._bad_sig:  # one error per bad version, not one per check
            log.error(
                "ip list %s: %s; keeping the previous list (%d networks)",
                self.path,
                msg,
                self.cidrs.size,
            )
        self._bad_sig = sig

    def check(self, force: bool = False) -> bool:
        """Reload if the file changed; True if a new version was accepted. Never raises."""
        now = self._clock()
        if not force and now < self._next_check:
            return False
        self._next_check = now + self.check_interval
        try:
            st = os.stat(self.path)
        except OSError as e:
            self._fail(_NO_FILE, f"cannot stat: {e.strerror or e}")
            return False
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if sig == self._sig or sig == self._bad_sig:
            return False
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as e:
            self._fail(sig, f"cannot read: {e.strerror or e}")
            return False
        nets, errors = parse_list(text, self.fmt)
        if len(errors) > self.max_errors:
            self._fail(sig, f"{len(errors)} invalid entries, first: {errors[0]}")
            return False
        if not nets and self.cidrs.size:
            self._fail(sig, "no networks in the new version")
            return False
        self.cidrs = CidrSet(nets)
        self._sig = sig
        self._bad_sig = None
        self.loaded = True
        self.last_error = None
        log.info("ip list %s: loaded %d networks", self.path, self.cidrs.size)
        return True

    def get(self) -> CidrSet:
        """`check()` when due (unless ``auto_check`` is off), then the current set."""
        if self.auto_check:
            self.check()
        return self.cidrs

    def contains(self, ip: object) -> bool:
        """Membership in the current set (no I/O)."""
        return self.cidrs.contains(ip)
