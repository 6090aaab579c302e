"""Hot reload of the rules: a cheap watcher over the rules files and folders.

`RulesWatcher.poll()` stats the watched paths (mtime, size, inode); nothing else happens while
they are unchanged. On a change it first waits until the files are stable (the same stat on two
checks `settle_s` apart), so a file that is still being written is not read half-way; then it
re-loads the rules: when they are valid and differ from the running ones (by content digest),
the caller gets the new `Policy` to swap in; when they are invalid (an empty or cut-off file
too: every rules file declares `version`) it logs the errors once per distinct set of errors
and keeps the old rules. `last_error` holds the rejection until the files are valid again.

What is watched: the paths given on the command line (files or folders), every file the
running policy was loaded from (includes too) and the folders holding them, so adding a file
to a rules folder is noticed as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .geo import GeoDatabaseError
from .policy import Policy, PolicyError, load_policy

if TYPE_CHECKING:
    from .pipeline import Gateway

log = logging.getLogger("hydraguard")

Sig = tuple[tuple[str, int, int, int], ...]
SETTLE_S = 0.2  # a changed file is read once its stat stayed the same this long
SETTLE_TRIES = 10  # still changing after this many settle intervals: try at the next poll


def _stat(path: str) -> tuple[str, int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (path, -1, -1, -1)
    return (path, st.st_mtime_ns, st.st_size, st.st_ino)


def policy_digest(policy: Policy) -> str:
    """Short content digest of the files a policy was read from (its 'version')."""
    h = hashlib.sha256()
    for src in policy.sources:
        h.update(src.encode() + b"\0")
        try:
            h.update(Path(src).read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return h.hexdigest()[:12]


@dataclass
class ReloadResult:
    """What one poll found: a new valid policy, or errors (logged already), or nothing."""

    policy: Policy | None = None
    digest: str | None = None
    errors: str | None = None


class RulesWatcher:
    """Watches the rules of a running proxy. Not thread-safe: poll from one task."""

    def __init__(self, paths: Sequence[str], policy: Policy, *,
                 loader: Callable[[Sequence[str]], Policy] = load_policy,
                 settle_s: float = SETTLE_S,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        """`settle_s`: how long a changed file must keep the same stat before it is read
        (0: read at once); `sleep` waits that long (poll runs in a worker thread)."""
        self.paths = [str(p) for p in paths]
        self.loader = loader
        self.settle_s = settle_s
        self._sleep = sleep
        self.digest = policy_digest(policy)
        self._watch = self._watch_list(policy)
        self._sig = self._signature()
        self._last_error: str | None = None
        self.rejected_at: float | None = None  # wall time of the rejection in force
        self.reloads = 0
        self.rejected = 0

    @property
    def last_error(self) -> str | None:
        """The errors of the changed rules on disk that are not in force (None: the files
        on disk are the running rules, or a valid successor)."""
        return self._last_error

    def reject(self, text: str) -> None:
        """Record that the files on disk cannot be used (logged by the caller)."""
        if text != self._last_error:
            self.rejected += 1
            self.rejected_at = time.time()
        self._last_error = text

    def _settled(self, sig: Sig) -> Sig | None:
        """The signature once it stayed the same for `settle_s`; None while still changing
        after SETTLE_TRIES intervals (the next poll tries again)."""
        if self.settle_s <= 0:
            return sig
        for _ in range(SETTLE_TRIES):
            self._sleep(self.settle_s)
            again = self._signature()
            if again == sig:
                return sig
            sig = again
        return None

    def _watch_list(self, policy: Policy) -> list[str]:
        out: list[str] = []
        for p in (*self.paths, *policy.sources):
            for q in (p, os.path.dirname(os.path.abspath(p))):
                if q not in out:
                    out.append(q)
        return out

    def _signature(self) -> Sig:
        return tuple(_stat(p) for p in self._watch)

    def changed(self) -> bool:
        """Cheap: did any watched path change since the last poll?"""
        return self._signature() != self._sig

    def poll(self, force: bool = False) -> ReloadResult:
        """Check the files; load them when they changed. Never raises for bad rules."""
        sig = self._signature()
        if sig == self._sig and not force:
            return ReloadResult()
        settled = self._settled(sig)
        if settled is None:
            return ReloadResult()
        sig = settled
        try:
            policy = self.loader(self.paths)
        except PolicyError as e:
            text = str(e)
            if text != self._last_error:  # once per version of the errors
                log.error("hydraguard: the changed rules are invalid; keeping the running "
                          "rules (%s):\n%s", self.digest, text)
            self.reject(text)
            self._sig = sig
            return ReloadResult(errors=text)
        digest = policy_digest(policy)
        if self._signature() != sig:
            return ReloadResult()  # changed while being read: try again at the next poll
        self._last_error = None
        self.rejected_at = None
        self._watch = self._watch_list(policy)
        self._sig = self._signature()
        if digest == self.digest:
            return ReloadResult()
        self.digest = digest
        self.reloads += 1
        return ReloadResult(policy=policy, digest=digest)


async def next_gateway(watcher: RulesWatcher, gateway: Gateway) -> Gateway | None:
    """If the watched rules changed and are valid and usable, the successor of `gateway`
    (state carried over, see `Gateway.successor`); else None, the running rules staying.
    Files are read and parsed in a worker thread, never on the event loop."""
    if not watcher.changed():
        return None
    res = await asyncio.to_thread(watcher.poll)
    if res.policy is None:
        return None
    from .pipeline import OPEN, open_geo

    geo: Any = OPEN
    try:
        if not gateway.keeps_geo(res.policy):  # opening checks each file: not on the loop
            geo = await asyncio.to_thread(open_geo, res.policy,
                                          auto_reload=not gateway.files_in_background)
        try:
            new = gateway.successor(res.policy, geo)
        except BaseException:
            if geo is not OPEN and geo is not None:
                geo.close()
            raise
    except (GeoDatabaseError, OSError, ValueError) as e:  # ValueError: a bad $REDIS_URL
        log.error("hydraguard: the changed rules cannot be used, keeping the running "
                  "rules (%s): %s", gateway.policy_digest, e)
        watcher.digest = gateway.policy_digest or watcher.digest
        watcher.reject(f"the changed rules cannot be used: {e}")
        return None
    new.policy_digest = res.digest
    return new
