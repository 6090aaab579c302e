"""Aggregate decision log lines on the fly, in bounded memory (see sketch.py for the bounds).

`Aggregate.add_line(bytes)` takes one raw line: a line that is not a JSON object with an
`action` (or not UTF-8, or too long) is counted as malformed and skipped; a record with fields
of the wrong type is read as far as it makes sense (a field that cannot be read counts as
absent). Nothing
here keeps a whole record, and only these fields are read: `ts`, `action`, `rule`,
`enforced`, `shadow`, `shadow_rules`, `geo.country`, `geo.subdivisions`, `cluster`,
`account` (the HMAC id), `client_ip`, `input_tokens`, `output_tokens`, `status`, `error`,
`budget`, `budget_shadow`, `state_degraded` and the names of `signals`. The log holds no API key
and no prompt text, and the report reads nothing that could.

Tokens of a cluster are the real usage (`input_tokens` + `output_tokens`) of its requests;
refused requests have none.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .sketch import Distinct, Entry, TimeBuckets, TopK, clip_key

UTIL_BINS = 20  # budget utilisation histogram: 5 % per bin
MAX_MALFORMED_SHOWN = 20


@dataclass(slots=True)
class ClusterStats(Entry):
    """A cluster's counts; ``weight`` is its tokens."""

    requests: int = 0
    refused: int = 0
    members: Distinct = field(default_factory=lambda: Distinct(256))
    ips: Distinct = field(default_factory=lambda: Distinct(256))
    first: float | None = None
    last: float | None = None


@dataclass(slots=True)
class BudgetStats(Entry):
    """A budget's entries; ``weight`` counts them."""

    refused: int = 0
    shadow_refused: int = 0
    capped: int = 0
    measured: int = 0  # entries with a limit and a remaining (utilisation known)
    util_sum: float = 0.0
    util_max: float = 0.0
    hist: list[int] = field(default_factory=lambda: [0] * UTIL_BINS)
    windows: list[str] = field(default_factory=list)
    limit: float | None = None

    def percentile(self, q: float) -> float | None:
        """Upper edge of the histogram bin holding the q-quantile (0..1) of utilisation."""
        if not self.measured:
            return None
        want, seen = q * self.measured, 0
        for i, n in enumerate(self.hist):
            seen += n
            if seen >= want and n:
                return (i + 1) / UTIL_BINS
        return 1.0


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def parse_ts(v: Any) -> float | None:
    """Epoch seconds of an RFC 3339 `ts` (UTC when it names no offset); None if unreadable."""
    if not isinstance(v, str):
        return None
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _truthy(v: Any) -> bool:
    return not (v is None or v is False or v == 0 or v == "" or v == [] or v == {})


@dataclass(slots=True)
class _Rec:
    """The fields of one record the report uses, read defensively."""

    ts: float | None
    action: str
    rule: str
    refused: bool
    shadow_hits: list[str]
    country: str | None
    subdivisions: list[str]
    cluster: str | None
    account: str | None
    client_ip: str | None
    tokens: float
    budgets: list[dict[str, Any]]
    budget_shadow: list[str]
    signals: list[str]
    status: str
    error: str | None
    degraded: bool


def read_record(r: dict[str, Any]) -> _Rec:
    """The report's view of one decision log record. ValueError when it has no `action` (not
    a decision line); any other field of an odd type counts as absent."""
    action = _str(r.get("action"))
    if action is None:
        raise ValueError("not a decision line: no action")
    enforced = r.get("enforced")
    if not isinstance(enforced, bool):
        enforced = action != "allow" and r.get("shadow") is not True
    shadow_hits = [x for x in (r.get("shadow_rules") or ()) if isinstance(x, str) and x] \
        if isinstance(r.get("shadow_rules"), list) else []
    geo = r.get("geo") if isinstance(r.get("geo"), dict) else {}
    subs = geo.get("subdivisions")
    subdivisions = [x for x in subs if isinstance(x, str) and x] if isinstance(subs, list) else []
    tin, tout = _num(r.get("input_tokens")), _num(r.get("output_tokens"))
    budgets = [b for b in r.get("budget") or () if isinstance(b, dict)] \
        if isinstance(r.get("budget"), list) else []
    bshadow = [_str(b.get("id")) or "(none)" for b in r.get("budget_shadow") or ()
               if isinstance(b, dict)] if isinstance(r.get("budget_shadow"), list) else []
    sig = r.get("signals")
    signals = [k for k, v in sig.items() if isinstance(k, str) and _truthy(v)] \
        if isinstance(sig, dict) else []
    status = r.get("status")
    return _Rec(
        ts=parse_ts(r.get("ts")), action=action, rule=_str(r.get("rule")) or "(none)",
        refused=enforced, shadow_hits=shadow_hits, country=_str(geo.get("country")),
        subdivisions=subdivisions, cluster=_str(r.get("cluster")),
        account=_str(r.get("account")), client_ip=_str(r.get("client_ip")),
        tokens=max(0.0, tin or 0.0) + max(0.0, tout or 0.0), budgets=budgets,
        budget_shadow=bshadow, signals=signals,
        status=str(status) if isinstance(status, int) and not isinstance(status, bool)
        else "none",
        error=_str(r.get("error")), degraded=r.get("state_degraded") is True)


class Aggregate:
    """Everything the report shows, counted on the fly. Caps: ``top`` tracked keys per
    ranking (clusters, rules, countries, ...; the table holds up to twice that), 240 time
    buckets, 1024-value distinct sketches (256 per cluster)."""

    def __init__(self, top: int = 500) -> None:
        self.lines = 0  # non-blank lines read
        self.records = 0
        self.malformed = 0
        self.malformed_at: list[tuple[str, int]] = []
        self.no_time = 0
        self.per_source: dict[str, int] = {}
        self.first: float | None = None
        self.last: float | None = None
        self.actions: TopK[Entry] = TopK(64)
        self.over_time = TimeBuckets()
        self.refused = 0
        self.shadow_would_refuse = 0
        self.refused_rules: TopK[Entry] = TopK(top)
        self.shadow_rules: TopK[Entry] = TopK(top)
        self.countries: TopK[Entry] = TopK(top)
        self.subdivisions: TopK[Entry] = TopK(top)
        self.clusters: TopK[ClusterStats] = TopK(top, ClusterStats)
        self.budgets: TopK[BudgetStats] = TopK(64, BudgetStats)
        self.signals: TopK[Entry] = TopK(256)
        self.statuses: TopK[Entry] = TopK(64)
        self.errors: TopK[Entry] = TopK(20)
        self.accounts = Distinct(1024)
        self.client_ips = Distinct(1024)
        self.cluster_names = Distinct(1024)
        self.tokens = 0.0
        self.degraded = 0
        self.error_lines = 0

    # -- input --------------------------------------------------------------------------
    def add_line(self, data: bytes | None, source: str = "-", number: int = 0) -> None:
        """One raw line (None: a line too long to read). Blank lines are ignored."""
        if data is not None and not data.strip():
            return
        self.lines += 1
        self.per_source[source] = self.per_source.get(source, 0) + 1
        obj: Any = None
        if data is not None:
            try:
                obj = json.loads(data)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                obj = None
        rec = None
        if isinstance(obj, dict):
            try:
                rec = read_record(obj)
            except (TypeError, ValueError, AttributeError, RecursionError):
                rec = None
        if rec is None:
            self.malformed += 1
            if len(self.malformed_at) < MAX_MALFORMED_SHOWN:
                self.malformed_at.append((source, number))
            return
        self.add(rec)

    def add_record(self, record: dict[str, Any]) -> None:
        """One parsed record (tests, tools)."""
        self.add(read_record(record))

    def add(self, r: _Rec) -> None:
        self.records += 1
        ts = r.ts
        if ts is None:
            self.no_time += 1
        else:
            self.first = ts if self.first is None else min(self.first, ts)
            self.last = ts if self.last is None else max(self.last, ts)
            shadow = r.action != "allow" and not r.refused  # logged, let through
            self.over_time.add(ts, clip_key(r.action) + (" (shadow)" if shadow else ""))
        self.actions.add(r.action)
        self.statuses.add(r.status)
        if r.refused:
            self.refused += 1
            self.refused_rules.add(r.rule)
            self.countries.add(r.country or "(unknown)")
            for s in r.subdivisions:
                self.subdivisions.add(s)
        hits = r.shadow_hits + r.budget_shadow
        if hits or (r.action != "allow" and not r.refused):
            self.shadow_would_refuse += 1
        for h in dict.fromkeys(hits):
            self.shadow_rules.add(h)
        if r.error:
            self.error_lines += 1
            self.errors.add(r.error)
        if r.degraded:
            self.degraded += 1
        if r.account:
            self.accounts.add(r.account)
        if r.client_ip:
            self.client_ips.add(r.client_ip)
        self.tokens += r.tokens
        for name in r.signals:
            self.signals.add(name)
        if r.cluster:
            self._cluster(r)
        for b in r.budgets:
            self._budget(b)
        for bid in r.budget_shadow:
            self.budgets.entry(bid).shadow_refused += 1

    def _cluster(self, r: _Rec) -> None:
        assert r.cluster is not None
        self.cluster_names.add(r.cluster)
        c = self.clusters.entry(r.cluster)
        c.weight += r.tokens
        c.requests += 1
        c.refused += r.refused
        if r.account:
            c.members.add(r.account)
        if r.client_ip:
            c.ips.add(r.client_ip)
        if r.ts is not None:
            c.first = r.ts if c.first is None else min(c.first, r.ts)
            c.last = r.ts if c.last is None else max(c.last, r.ts)

    def _budget(self, b: dict[str, Any]) -> None:
        bs = self.budgets.entry(_str(b.get("id")) or "(none)")
        bs.weight += 1
        if b.get("refused") is True:
            bs.refused += 1
        if b.get("capped_to") is not None:
            bs.capped += 1
        w = _str(b.get("window"))
        if w and w not in bs.windows and len(bs.windows) < 8:
            bs.windows.append(clip_key(w))
        limit, remaining = _num(b.get("limit")), _num(b.get("remaining"))
        if limit is None or limit <= 0 or remaining is None:
            return
        bs.limit = limit
        util = min(1.0, max(0.0, (limit - remaining) / limit))
        bs.measured += 1
        bs.util_sum += util
        bs.util_max = max(bs.util_max, util)
        bs.hist[min(UTIL_BINS - 1, int(util * UTIL_BINS))] += 1
