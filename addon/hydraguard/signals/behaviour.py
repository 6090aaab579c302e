"""Sliding-window behaviour counters with compact memory and an injected clock.

Every counter keeps its keys in a `table.KeyTable`: fixed-size slots in typed arrays, no
Python object per key (about 40-100 bytes per live key, see table.py), at most `max_keys`
live keys (then the least recently touched of a sample is dropped), keys idle for a whole
window dead at once. `DistinctCounter` counts distinct members per key seen within the
window: exactly up to 32 (`sketch.EXACT`), estimated above by a windowed HyperLogLog
(sketch.py: ~7-9 % error), and never more than `max_members_per_key` (the count saturates
there, as before). Times have a 1/16 s resolution. Keys and members are known by 64-bit
hashes (sketch.h64): two keys would share a record with odds of ~1 in 10^7 at a million keys.

`BehaviourTracker` keeps one record per account (its IPs, ASNs, countries and request rate in
one slot: ~80 bytes at most per account), one per client IP and one per /24 or /64.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..addresses import ip_to_int, prefix_int
from .sketch import h64
from .table import KeyTable

__all__ = ["BehaviourConfig", "BehaviourTracker", "DistinctCounter", "RateCounter"]

Clock = Callable[[], float]


class DistinctCounter:
    """Distinct members per key seen within the last `window_s` seconds."""

    __slots__ = ("_t", "max_keys", "max_members", "window")

    def __init__(self, window_s: float, max_keys: int, max_members_per_key: int,
                 clock: Clock = time.monotonic) -> None:
        self.window = float(window_s)
        self.max_keys = max(1, int(max_keys))
        self.max_members = max(1, int(max_members_per_key))
        self._t = KeyTable(window_s, self.max_keys, 1, clock=clock)

    def __len__(self) -> int:
        """Number of live keys (never more than `max_keys`)."""
        return len(self._t)

    def add(self, key: Hashable, member: Hashable) -> int:
        """Record `member` for `key` now; return the distinct members of `key` in the window."""
        t = self._t
        now = t.now()
        k = h64(key)
        i, _ = t.slot(k, now)
        return t.add(i, 0, k, h64(member), now, self.max_members)

    def count(self, key: Hashable) -> int:
        """Distinct members of `key` in the window (0 if unknown); does not touch the key."""
        t = self._t
        k = h64(key)
        i = t.find(k)
        return 0 if i < 0 else t.count(i, 0, k, t.now(), self.max_members)


class _Rates:
    """The sliding two-window rate in a table's rate fields."""

    @staticmethod
    def hit(t: KeyTable, i: int, created: bool, n: float) -> float:
        now = t.clock()
        w = t.rate_window
        idx = math.floor(now / w)
        r_idx, cur, prev = t.r_idx, t.r_cur, t.r_prev
        if created or r_idx[i] < idx - 1:
            prev[i] = 0.0
            cur[i] = 0.0
        elif r_idx[i] == idx - 1:
            prev[i] = cur[i]
            cur[i] = 0.0
        r_idx[i] = idx
        cur[i] += n
        return cur[i] + prev[i] * (1.0 - (now / w - idx))

    @staticmethod
    def rate(t: KeyTable, i: int) -> float:
        now = t.clock()
        w = t.rate_window
        idx = math.floor(now / w)
        stored = t.r_idx[i]
        if stored == idx:
            c, p = t.r_cur[i], t.r_prev[i]
        elif stored == idx - 1:
            c, p = 0.0, t.r_cur[i]
        else:
            return 0.0
        return c + p * (1.0 - (now / w - idx))


class RateCounter:
    """Events per key in a sliding window (two fixed windows, the previous one weighted by
    the part of it still inside the sliding window). O(1) time and a few bytes per key."""

    __slots__ = ("_t", "max_keys", "window")

    def __init__(self, window_s: float, max_keys: int, clock: Clock = time.monotonic) -> None:
        self.window = float(window_s)
        self.max_keys = max(1, int(max_keys))
        self._t = KeyTable(window_s, self.max_keys, 0, rate_window_s=window_s, clock=clock)

    def __len__(self) -> int:
        return len(self._t)

    def hit(self, key: Hashable, n: float = 1) -> float:
        """Add `n` events for `key` now; return the events in the sliding window."""
        t = self._t
        i, created = t.slot(h64(key), t.now())
        return _Rates.hit(t, i, created, n)

    def rate(self, key: Hashable) -> float:
        """Events of `key` in the sliding window, without adding one."""
        t = self._t
        i = t.find(h64(key))
        return 0.0 if i < 0 else _Rates.rate(t, i)


@dataclass(frozen=True, slots=True)
class BehaviourConfig:
    """Windows and memory bounds of `BehaviourTracker` (each table holds at most max_keys)."""

    window_s: float = 3600.0
    rate_window_s: float = 60.0
    max_keys: int = 1_000_000
    max_members_per_key: int = 1_000


class _View:
    """One signal's counter over a shared table (for inspection and tests)."""

    __slots__ = ("_cap", "_field", "_t")

    def __init__(self, table: KeyTable, field: int, cap: int) -> None:
        self._t, self._field, self._cap = table, field, cap

    def __len__(self) -> int:
        return len(self._t)

    def count(self, key: Hashable) -> int:
        """Distinct members of `key` in the window (a rate: events), without touching it."""
        t = self._t
        k = h64(key)
        i = t.find(k)
        if i < 0:
            return 0
        if self._field < 0:
            return round(_Rates.rate(t, i))
        return t.count(i, self._field, k, t.now(), self._cap)


_V4_MAPPED = 0xFFFF << 32
_IPS, _ASNS, _COUNTRIES = 0, 1, 2  # distinct fields of an account's record


class BehaviourTracker:
    """Per-request behaviour signals across accounts, IPs, networks, ASNs and countries."""

    def __init__(self, config: BehaviourConfig | None = None, clock: Clock = time.monotonic):
        c = config or BehaviourConfig()
        self.config = c
        self._cap = max(1, int(c.max_members_per_key))
        self.accounts = KeyTable(c.window_s, c.max_keys, 3, rate_window_s=c.rate_window_s,
                                 clock=clock)
        self.ips = KeyTable(c.window_s, c.max_keys, 1, clock=clock)
        self.v4_24 = KeyTable(c.window_s, c.max_keys, 1, clock=clock)
        self.v6_64 = KeyTable(c.window_s, c.max_keys, 1, clock=clock)
        cap = self._cap
        self.accounts_per_ip = _View(self.ips, 0, cap)
        self.accounts_per_v4_24 = _View(self.v4_24, 0, cap)
        self.accounts_per_v6_64 = _View(self.v6_64, 0, cap)
        self.ips_per_account = _View(self.accounts, _IPS, cap)
        self.asns_per_account = _View(self.accounts, _ASNS, cap)
        self.countries_per_account = _View(self.accounts, _COUNTRIES, cap)
        self.requests_per_account = _View(self.accounts, -1, cap)

    def counters(self) -> dict[str, _View]:
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

    def update(self, ip: str | None, account: str | None, asn: int | None = None,
               country: str | None = None) -> dict[str, float]:
        """Record one request and return the signals after it (0 where not applicable).

        Without an account only the IP-side counts are read (nothing is added). IPv4-mapped
        IPv6 addresses count as IPv4; invalid IPs give 0 for the IP-side signals.
        """
        parsed = ip_to_int(ip) if ip else None
        cap = self._cap
        acc = self.accounts
        now = acc.now()
        ha = h64(account) if account is not None else 0
        n_ip = n_net = 0
        v4 = True
        ip_member = 0
        if parsed is not None:
            version, x = parsed
            v4 = version == 4
            # v4 addresses are kept apart from v6 ones by the mapped prefix
            ip_member = h64(x | _V4_MAPPED if v4 else x)
            ips, nets = self.ips, (self.v4_24 if v4 else self.v6_64)
            ip_key, net_key = ip_member, h64(prefix_int(version, x))
            if ha:
                i, _ = ips.slot(ip_key, now)
                n_ip = ips.add(i, 0, ip_key, ha, now, cap)
                i, _ = nets.slot(net_key, now)
                n_net = nets.add(i, 0, net_key, ha, now, cap)
            else:
                i = ips.find(ip_key)
                n_ip = 0 if i < 0 else ips.count(i, 0, ip_key, now, cap)
                i = nets.find(net_key)
                n_net = 0 if i < 0 else nets.count(i, 0, net_key, now, cap)
        out: dict[str, float] = {
            "accounts_per_ip": n_ip,
            "accounts_per_v4_24": n_net if v4 else 0,
            "accounts_per_v6_64": 0 if v4 else n_net,
            "ips_per_account": 0, "asns_per_account": 0, "countries_per_account": 0,
            "requests_per_account": 0.0,
        }
        if not ha:
            return out
        a_key = ha
        i, created = acc.slot(a_key, now)
        add, count = acc.add, acc.count
        out["ips_per_account"] = add(i, _IPS, a_key, ip_member, now, cap) if ip_member \
            else count(i, _IPS, a_key, now, cap)
        out["asns_per_account"] = add(i, _ASNS, a_key, h64(asn), now, cap) \
            if asn is not None else count(i, _ASNS, a_key, now, cap)
        out["countries_per_account"] = add(i, _COUNTRIES, a_key, h64(country), now, cap) \
            if country else count(i, _COUNTRIES, a_key, now, cap)
        out["requests_per_account"] = _Rates.hit(acc, i, created, 1)
        return out
