"""A circuit breaker with hysteresis for the shared budget state (pure: no I/O, no sleeps).

- **closed** (Redis healthy): every operation goes to Redis. ``failures`` failures in a
  row (timeouts, refused connections, errors) open the breaker; one success resets the
  count, so a slow-but-up Redis whose calls mostly succeed never opens it.
- **open** (Redis down): no operation goes to Redis. After ``backoff`` seconds a probe
  is due (the caller runs one, off the request path).
- **half-open**: a probe succeeded; further probes follow ``probe_gap_s`` apart, and
  ``successes`` probe successes in a row close the breaker. A failed probe opens it
  again and doubles the back-off (up to ``max_backoff_s``).

The back-off starts at ``backoff_s`` when the breaker opens, unless it closed less than
``stable_s`` before: then it keeps doubling, so a Redis that keeps falling over right after
recovering is probed less and less often instead of flapping.

``failure`` / ``probe_*`` return the transition that happened (``"down"`` or
``"recovered"``), so the caller logs each exactly once.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Breaker"]

Transition = Literal["down", "recovered"] | None


class Breaker:
    """State machine of the module doc; ``now`` is seconds on a monotonic clock."""

    __slots__ = ("_backoff", "_closed_at", "_fails", "_oks", "_probe_at", "backoff_s",
                 "failures", "max_backoff_s", "probe_gap_s", "stable_s", "state", "successes")

    def __init__(self, *, failures: int = 3, successes: int = 3, backoff_s: float = 1.0,
                 max_backoff_s: float = 8.0, stable_s: float = 30.0,
                 probe_gap_s: float = 0.1) -> None:
        if failures < 1 or successes < 1 or backoff_s <= 0:
            raise ValueError("failures and successes must be >= 1, backoff_s > 0")
        self.failures = failures
        self.successes = successes
        self.backoff_s = backoff_s
        self.max_backoff_s = max(max_backoff_s, backoff_s)
        self.stable_s = stable_s
        self.probe_gap_s = probe_gap_s
        self.state: Literal["closed", "open", "half-open"] = "closed"
        self._fails = 0
        self._oks = 0
        self._backoff = 0.0
        self._probe_at = 0.0
        self._closed_at = -1e18

    @property
    def closed(self) -> bool:
        """Operations may go to Redis."""
        return self.state == "closed"

    @property
    def backoff(self) -> float:
        """The current back-off (seconds between an opening or failed probe and the next)."""
        return self._backoff

    def success(self) -> None:
        """An operation succeeded (closed state)."""
        self._fails = 0

    def failure(self, now: float) -> Transition:
        """An operation failed; ``"down"`` if that opened the breaker."""
        if self.state != "closed":
            return None
        self._fails += 1
        if self._fails < self.failures:
            return None
        self._open(now, fresh=now - self._closed_at >= self.stable_s)
        return "down"

    def _open(self, now: float, *, fresh: bool) -> None:
        self.state = "open"
        self._oks = 0
        self._fails = 0
        if fresh or self._backoff <= 0:
            self._backoff = self.backoff_s
        else:
            self._backoff = min(self._backoff * 2, self.max_backoff_s)
        self._probe_at = now + self._backoff

    def probe_delay(self, now: float) -> float:
        """Seconds until the next probe is due (0: now, or the breaker is closed)."""
        if self.state == "closed":
            return 0.0
        return max(0.0, self._probe_at - now)

    def probe_ok(self, now: float) -> Transition:
        """A probe succeeded; ``"recovered"`` if that closed the breaker."""
        if self.state == "closed":
            return None
        self._oks += 1
        if self._oks < self.successes:
            self.state = "half-open"
            self._probe_at = now + self.probe_gap_s
            return None
        self.state = "closed"
        self._oks = 0
        self._fails = 0
        self._closed_at = now
        return "recovered"

    def probe_failed(self, now: float) -> None:
        """A probe failed: open again with a doubled back-off."""
        if self.state != "closed":
            self._open(now, fresh=False)
