"""Sliding-window behaviour counters with bounded memory and an injected clock.

Keys live in an LRU (`OrderedDict`, least recently touched first) capped at `max_keys`; keys idle
for a whole window are dropped lazily. `DistinctCounter` keeps per key an insertion-ordered map
member -> last seen, capped at `max_members_per_key` (the oldest member is evicted, so counts
saturate at the cap). Every operation is O(1) amortised: expiry only pops from the old end.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..addresses import ip_to_int, prefix_int

__all__ = ["BehaviourConfig", "BehaviourTracker", "DistinctCounter", "RateCounter"]

Clock = Callable[[], float]


class DistinctCounter:
    """Distinct members per key seen within the last `window_s` seconds."""

    __slots__ = ("_clock", "_keys", "max_keys", "max_members", "window")

    def __init__(
        self,
        window_s: float,
        max_keys: int,
        max_members_per_key: int,
        clock: Clock = time.monotonic,
    ) -> None:
        self.window = float(window_s)
        self.max_keys = max(1, int(max_keys))
        self.max_members = max(1, int(max_members_per_key))
        self._clock = clock
        # key -> [last_touch, OrderedDict(member -> last_seen)]
        self._keys: OrderedDict[Hashable, list] = OrderedDict()

    def __len__(self) -> int:
        """Number of keys tracked (never more than `max_keys`)."""
        return len(self._keys)

    def _expire_keys(self, cutoff: float) -> None:
        keys = self._keys
        while keys:
            k, entry = next(iter(keys.items()))
            if entry[0] >= cutoff:
                break
            del keys[k]

    @staticmethod
    def _expire_members(members: OrderedDict, cutoff: float) -> None:
        while members:
            m, seen = next(iter(members.items()))
            if seen >= cutoff:
                break
            del members[m]

    def add(self, key: Hashable, member: Hashable) -> int:
        """Record `member` for `key` now; return the distinct members of `key` in the window."""
        now = self._clock()
        cutoff = now - self.window
        keys = self._keys
        entry = keys.get(key)
        if entry is None:
            self._expire_keys(cutoff)
            if len(keys) >= self.max_keys:
                keys.popitem(last=False)
            members: OrderedDict = OrderedDict()
            members[member] = now
            keys[key] = [now, members]
            return 1
        keys.move_to_end(key)
        entry[0] = now
        members = entry[1]
        if member in members:
            members.move_to_end(member)
        elif len(members) >= self.max_members:
            members.popitem(last=False)
        members[member] = now
        self._expire_members(members, cutoff)
        return len(members)

    def count(self, key: Hashable) -> int:
        """Distinct members of `key` in the window (0 if unknown); does not touch the key."""
        entry = self._keys.get(key)
        if entry is None:
            return 0
        members = entry[1]
        self._expire_members(members, self._clock() - self.window)
        return len(members)

    def members(self, key: Hashable) -> list[Hashable]:
        """Members of `key` in the window, oldest first."""
        entry = self._keys.get(key)
        if entry is None:
            return []
        self._expire_members(entry[1], self._clock() - self.window)
        return list(entry[1])


class RateCounter:
    """Events per key in a sliding window (two fixed windows, the previous one weighted by
    the part of it still inside the sliding window). O(1) time and memory per key."""

    __slots__ = ("_clock", "_keys", "max_keys", "window")

    def __init__(self, window_s: float, max_keys: int, clock: Clock = time.monotonic) -> None:
        self.window = float(window_s)
        self.max_keys = max(1, int(max_keys))
        self._clock = clock
        # key -> [window_index, current_count, previous_count]
        self._keys: OrderedDict[Hashable, list] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def _estimate(self, entry: list, now: float) -> float:
        idx = math.floor(now / self.window)
        if entry[0] == idx:
            cur, prev = entry[1], entry[2]
        elif entry[0] == idx - 1:
            cur, prev = 0.0, entry[1]
        else:
            return 0.0
        elapsed = now / self.window - idx
        return cur + prev * (1.0 - elapsed)

    def hit(self, key: Hashable, n: float = 1) -> float:
        """Add `n` events for `key` now; return the events in the sliding window."""
        now = self._clock()
        idx = math.floor(now / self.window)
        keys = self._keys
        entry = keys.get(key)
        if entry is None:
            while keys:  # drop keys idle for two windows (they estimate 0)
                k, old = next(iter(keys.items()))
                if old[0] >= idx - 1:
                    break
                del keys[k]
            if len(keys) >= self.max_keys:
                keys.popitem(last=False)
            entry = keys[key] = [idx, 0.0, 0.0]
        else:
            keys.move_to_end(key)
            if entry[0] != idx:
                entry[2] = entry[1] if entry[0] == idx - 1 else 0.0
                entry[1] = 0.0
                entry[0] = idx
        entry[1] += n
        return self._estimate(entry, now)

    def rate(self, key: Hashable) -> float:
        """Events of `key` in the sliding window, without adding one."""
        entry = self._keys.get(key)
        return 0.0 if entry is None else self._estimate(entry, self._clock())


@dataclass(frozen=True, slots=True)
class BehaviourConfig:
    """Windows and memory bounds of `BehaviourTracker` (each counter holds at most max_keys)."""

    window_s: float = 3600.0
    rate_window_s: float = 60.0
    max_keys: int = 100_000
    max_members_per_key: int = 1_000


_V4_MAPPED = 0xFFFF << 32


class BehaviourTracker:
    """Per-request behaviour signals across accounts, IPs, networks, ASNs and countries."""

    def __init__(self, config: BehaviourConfig | None = None, clock: Clock = time.monotonic):
        c = config or BehaviourConfig()
        self.config = c

        def dc() -> DistinctCounter:
            return DistinctCounter(c.window_s, c.max_keys, c.max_members_per_key, clock)

        self.accounts_per_ip = dc()
        self.accounts_per_v4_24 = dc()
        self.accounts_per_v6_64 = dc()
        self.ips_per_account = dc()
        self.asns_per_account = dc()
        self.countries_per_account = dc()
        self.requests_per_account = RateCounter(c.rate_window_s, c.max_keys, clock)

    def counters(self) -> dict[str, DistinctCounter | RateCounter]:
        """The counters by signal name (for inspection and tests)."""
        return {
            "accounts_per_ip": self.accounts_per_ip,
            "accounts_per_v4_24": self.accounts_per_v4_24,
            "accounts_per_v6_64": self.accounts_per_v6_64,
            "ips_per_account": self.ips_per_account,
            "asns_per_account": self.asns_per_account,
            "countries_per_account": self.countries_per_account,
            "requests_per_account": self.requests_per_account,
        }

    def update(
        self,
        ip: str | None,
        account: str | None,
        asn: int | None = None,
        country: str | None = None,
    ) -> dict[str, float]:
        """Record one request and return the signals after it (0 where not applicable).

        Without an account only the IP-side counts are read (nothing is added). IPv4-mapped
        IPv6 addresses count as IPv4; invalid IPs give 0 for the IP-side signals.
        """
        parsed = ip_to_int(ip) if ip else None
        out: dict[str, float] = {
            "accounts_per_ip": 0,
            "accounts_per_v4_24": 0,
            "accounts_per_v6_64": 0,
            "ips_per_account": 0,
            "asns_per_account": 0,
            "countries_per_account": 0,
            "requests_per_account": 0.0,
        }
        if parsed is not None:
            version, x = parsed
            # keys are ints; v4 addresses are kept apart from v6 ones by the mapped prefix
            ip_key = x | _V4_MAPPED if version == 4 else x
            net_counter = self.accounts_per_v4_24 if version == 4 else self.accounts_per_v6_64
            net_key = prefix_int(version, x)
            net_name = "accounts_per_v4_24" if version == 4 else "accounts_per_v6_64"
            if account is not None:
                out["accounts_per_ip"] = self.accounts_per_ip.add(ip_key, account)
                out[net_name] = net_counter.add(net_key, account)
                out["ips_per_account"] = self.ips_per_account.add(account, ip_key)
            else:
                out["accounts_per_ip"] = self.accounts_per_ip.count(ip_key)
                out[net_name] = net_counter.count(net_key)
        if account is not None:
            if parsed is None:
                out["ips_per_account"] = self.ips_per_account.count(account)
            if asn is not None:
                out["asns_per_account"] = self.asns_per_account.add(account, asn)
            else:
                out["asns_per_account"] = self.asns_per_account.count(account)
            if country:
                out["countries_per_account"] = self.countries_per_account.add(account, country)
            else:
                out["countries_per_account"] = self.countries_per_account.count(account)
            out["requests_per_account"] = self.requests_per_account.hit(account)
        return out
