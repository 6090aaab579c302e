"""Rules-file sections for clusters, budgets and state (`clusters:`, `budgets:`, `state:`).

- ``clusters:`` says which callers share one budget: an ordered list of cluster definitions;
  the first whose ``when`` holds for a model call decides its cluster key (built from request
  attributes). With ``link:``, accounts whose combined shared evidence (exit IPs, /24 prefix,
  ASN, TLS fingerprint + User-Agent, prompt template) within a window crosses a threshold are
  merged into one cluster ("hydra linking"; the `link:` schema is in `link_sections`).
- ``budgets:`` are token buckets per cluster key: one or more windows, what is counted
  (input / output / weighted total, cache tokens, per-model multipliers), how much output is
  reserved before forwarding, and what happens when the budget is spent (429 or a lowered
  ``max_tokens``), optionally in shadow mode.
- ``state:`` is where budget levels live: ``memory`` (one replica) or ``redis`` (shared by
  every replica; atomic Lua scripts; hydra link evidence is then shared too) and what to do
  when Redis is unavailable.

This module holds the schema (keys, defaults, docs) and the compile step; the compiled,
immutable form (`BudgetsConfig` and its parts) is in `budget_model`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .budget_model import (
    BudgetDef,
    BudgetsConfig,
    ClusterDef,
    StateConfig,
    WindowSpec,
)
from .conditions import ConditionSpec
from .link_sections import LINK, compile_link
from .probation_section import PROBATION, compile_probation
from .schema import (
    INVALID,
    Bool,
    Checked,
    Errors,
    Field,
    Int,
    ListOf,
    MapOf,
    Num,
    Str,
    Struct,
    did_you_mean,
)
from .yamlpos import Where

KEY_ATTRS = ("account", "ip", "prefix", "asn", "country", "ja4", "api", "model", "cluster")
PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0, "week": 604800.0}
COUNTS = ("input", "output", "total")
ON_EXCEED = ("throttle", "cap_max_tokens")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")  # what redis-py's from_url accepts
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# --------------------------------------------------------------------------------------------
# schema

STATE = Struct(
    doc="Where budget levels are kept. Default: memory (one replica).",
    fields={
        "backend": Field(
            Str(choices=("memory", "redis")), default="memory",
            doc="memory: in this process (bounded LRU; each replica has its own budgets). "
            "redis: shared by every replica pointing at the same Redis (atomic Lua scripts; "
            "hydra link evidence is shared too).",
            example="redis"),
        "redis_url": Field(
            Str(), default=None,
            doc="Redis URL (redis://, rediss://, unix://). When absent: the environment "
            "variable named by redis_url_env, else redis://127.0.0.1:6379/0.",
            example="redis://127.0.0.1:6379/0"),
        "redis_url_env": Field(
            Str(), default="REDIS_URL",
            doc="Environment variable read for the Redis URL when redis_url is not set.",
            example="REDIS_URL"),
        "prefix": Field(
            Str(), default="hg",
            doc="Prefix of every Redis key (keys look like `<prefix>:{<cluster key>}:b`; the "
            "braces keep one cluster in one Redis Cluster hash slot).", example="hg"),
        "timeout_ms": Field(
            Num(min=1, max=10000), default=2000,
            doc="Upper bound of every Redis operation, in milliseconds (waiting for a free "
            "connection included). A slow-but-up Redis must not count as down: under 64-way "
            "bursts on two replicas on a busy 2-core machine operations took up to 1.1 s "
            "(p99 0.3-0.65 s), mostly the replica's own event loop. The bound is what a "
            "request waits for an unresponsive Redis before its budget is answered per "
            "on_error; once the circuit breaker opened (3 failures in a row) nothing waits, "
            "and a refused connection fails at once.", example=2000),
        "on_error": Field(
            Str(choices=("open", "closed")), default="open",
            doc="Redis down or slow: open = each replica answers from its own share of every "
            "budget (1/replicas of each window, in memory, starting from the level last "
            "seen on Redis; logged as state_degraded with state_backend: local), closed = "
            "answer 429 with retry-after (state_backend: none). A circuit breaker decides "
            "when Redis is down (3 failures in a row) and up again (3 probes in a row); one "
            "warning each. Usage served meanwhile is charged to Redis once it is back.",
            example="open"),
        "replicas": Field(
            Int(min=1, max=10_000), default=1,
            doc="redis backend: how many replicas share the budgets. While Redis is down "
            "each replica may spend 1/replicas of every budget (on_error: open), so "
            "together they stay within it. Set it to the number of replicas you run.",
            example=2),
        "retry_after": Field(
            Num(min=1, max=3600), default=1,
            doc="Seconds in retry-after of a fail-closed refusal; also the first back-off "
            "before a down Redis is probed (doubling while probes fail, up to twice that "
            "and at least 2 s).",
            example=1),
        "max_keys": Field(
            Int(min=1, max=10_000_000), default=100_000,
            doc="memory backend: cluster keys kept (least recently used dropped first); redis "
            "backend: the same bound for the local share used while Redis is down.",
            example=100000),
        "max_connections": Field(
            Int(min=1, max=10_000), default=64,
            doc="redis backend: connections per replica, i.e. budget operations in flight at "
            "once; more wait for a free connection within timeout_ms.", example=64),
        "reservation_ttl": Field(
            Num(min=10, max=86400), default=60,
            doc="redis backend: seconds after which the tokens held for a request (reserved "
            "before forwarding, settled after the response) are given back if the replica "
            "holding them stopped renewing them (it died, or lost Redis that long). A live "
            "replica renews its holds every third of this, so long streams keep theirs.",
            example=60),
    },
)

CLUSTER = Struct(
    doc="A cluster definition: which model calls it covers and how their budget key is built.",
    fields={
        "id": Field(Str(), required=True, doc="Unique id (appears in the decision log).",
                    example="per-account"),
        "description": Field(Str(non_empty=False), default="", doc="Free text."),
        "when": Field(
            ConditionSpec(),
            doc="Condition (the `when:` language of rules). Definitions are tried in order; "
            "the first that matches decides the cluster. None: matches every model call.",
            example={"signal": "ip.hosting"}),
        "key": Field(
            ListOf(Str(choices=KEY_ATTRS), min_len=1, allow_scalar=True), required=True,
            doc="Request attributes that make the key: account, ip, prefix (v4 /24, v6 /64), "
            "asn, country, ja4, api, model, cluster (the hydra-linked account cluster; needs "
            "link). A missing attribute counts as one shared value '-'.",
            example=["asn"]),
        "link": Field(LINK, doc=LINK.doc,
                      example={"window": 3600, "evidence": [{"kind": "ip"},
                                                            {"kind": "template"}]}),
    },
)

WINDOW = Struct(
    doc="One token-bucket window (continuous refill: no double burst at a boundary).",
    fields={
        "per": Field(Str(choices=tuple(PERIODS)),
                     doc="The window length by name (or give seconds).", example="minute"),
        "seconds": Field(Num(min=1, max=366 * 86400),
                         doc="The window length in seconds (or give per).", example=300),
        "tokens": Field(Int(min=1, max=10**15), required=True,
                        doc="Weighted tokens allowed per window.", example=100000),
        "name": Field(Str(), doc="Name in logs and headers (default: per, or '<seconds>s').",
                      example="minute"),
    },
)

WEIGHTS = Struct(
    doc="Weight of each kind of token in the counted total.",
    fields={
        "input": Field(Num(min=0, max=1000), default=1.0,
                       doc="Uncached input tokens (and the input estimate).", example=1),
        "output": Field(Num(min=0, max=1000), default=1.0, doc="Output tokens.", example=1),
        "cache_read": Field(Num(min=0, max=1000), default=1.0,
                            doc="Input tokens read from the prompt cache.", example=0.1),
        "cache_creation": Field(Num(min=0, max=1000), default=1.0,
                                doc="Input tokens written to the prompt cache.", example=1.25),
    },
)

BUDGET = Struct(
    doc="A token budget per cluster key.",
    fields={
        "id": Field(Str(), required=True, doc="Unique id (decision log `budget`, 429 rule).",
                    example="cluster-tokens"),
        "description": Field(Str(non_empty=False), default="", doc="Free text."),
        "clusters": Field(
            ListOf(Str(), min_len=1, allow_scalar=True),
            doc="Cluster definition ids it applies to (default: all).",
            example=["per-account"]),
        "when": Field(ConditionSpec(), doc="Extra condition on the request (default: always).",
                      example={"model": "claude-opus-*"}),
        "windows": Field(
            ListOf(WINDOW, min_len=1), required=True,
            doc="Windows, all reserved together (a request must fit in every one).",
            example=[{"per": "minute", "tokens": 100000}, {"per": "day", "tokens": 5000000}]),
        "count": Field(Str(choices=COUNTS), default="total",
                       doc="What is counted: input, output or total (both) tokens, weighted.",
                       example="total"),
        "weights": Field(WEIGHTS, default=None, doc=WEIGHTS.doc,
                         example={"cache_read": 0.1, "cache_creation": 1.25}),
        "model_multipliers": Field(
            MapOf(Num(min=0, max=10000)), default=None,
            doc="Glob pattern of model -> factor applied to the weighted count (first match "
            "in file order; unlisted models: 1).", example={"claude-opus-*": 5}),
        "max_output_reserve": Field(
            Int(min=0, max=10_000_000), default=4096,
            doc="Clamp of the output part of a reservation (the request's max_tokens may be "
            "larger; actual output above it is charged when the response ends).",
            example=4096),
        "default_output": Field(
            Int(min=0, max=10_000_000), default=None,
            doc="Output reserved when the request sets no output cap (default: "
            "max_output_reserve).", example=1024),
        "on_exceed": Field(
            Str(choices=ON_EXCEED), default="throttle",
            doc="throttle: answer 429 (retry-after, rate-limit headers). cap_max_tokens: "
            "lower the request's output cap to cap_to when that fits, else 429.",
            example="throttle"),
        "cap_to": Field(Int(min=1, max=10_000_000),
                        doc="Output cap used by on_exceed: cap_max_tokens.", example=256),
        "shadow": Field(Bool(), default=False,
                        doc="Compute and log what would be refused (budget_shadow); refuse "
                        "nothing.", example=False),
        "reason": Field(Str(non_empty=False), default="",
                        doc="Message of the 429 (default: names budget, window, retry time).",
                        example="token budget exhausted"),
        "probation": Field(PROBATION, default=None, doc=PROBATION.doc,
                           example={"key": ["asn"], "min_age": 86400, "min_requests": 20}),
    },
)

SECTIONS: dict[str, Field] = {
    "state": Field(STATE, default=None, doc=STATE.doc, example={"backend": "memory"}),
    "clusters": Field(ListOf(CLUSTER), default=(), doc=CLUSTER.doc,
                      example=[{"id": "per-account", "key": ["account"]}]),
    "budgets": Field(ListOf(BUDGET), default=(), doc=BUDGET.doc,
                     example=[{"id": "b", "clusters": ["per-account"],
                               "windows": [{"per": "minute", "tokens": 100000}]}]),
}

# --------------------------------------------------------------------------------------------
# compile (the compiled form is in budget_model)


def _window(c: Checked, i: int, path: str, seen: dict[str, Where], errors: Errors
            ) -> WindowSpec | None:
    per, secs = c["per"], c["seconds"]
    if (per is None) == (secs is None):
        errors.add(c.where, f"{path}.windows[{i}]: give exactly one of per or seconds")
        return None
    period = PERIODS[per] if per is not None else float(secs)
    name = c["name"] or (per if per is not None else f"{secs:g}s")
    if name in seen:
        errors.add(c.where, f"{path}.windows[{i}]: duplicate window name {name!r} "
                   f"(first at line {seen[name].line}); set `name`")
        return None
    seen[name] = c.where
    return WindowSpec(name, int(c["tokens"]), period)


def compile_budgets(checked: dict[str, Any], errors: Errors, *,
                    cluster_ids: Sequence[str] | None = None,
                    base: Path | None = None) -> BudgetsConfig | None:
    """The compiled budget settings (None: no clusters and no budgets).

    An item of `clusters` or `budgets` may be INVALID (its schema error is recorded already):
    it is skipped, and `cluster_ids` (every id written, bad items too) keeps a budget that
    names such a cluster from being reported as naming an unknown one."""
    clusters_in = checked.get("clusters") or ()
    budgets_in = checked.get("budgets") or ()
    s = checked.get("state")
    if not clusters_in and not budgets_in and s is None:
        return None
    url = s["redis_url"] if s is not None else None
    if url is not None and not url.startswith(REDIS_SCHEMES):
        errors.add(s.at("redis_url"), f"state.redis_url: {url!r} must start with one of "
                   f"{', '.join(REDIS_SCHEMES)}")
    state = StateConfig() if s is None else StateConfig(
        backend=s["backend"], redis_url=s["redis_url"], redis_url_env=s["redis_url_env"],
        prefix=s["prefix"], timeout_ms=float(s["timeout_ms"]), on_error=s["on_error"],
        retry_after_s=float(s["retry_after"]), max_keys=s["max_keys"],
        reservation_ttl_s=float(s["reservation_ttl"]), max_connections=s["max_connections"],
        replicas=s["replicas"],
    )
    clusters: list[ClusterDef] = []
    cseen: dict[str, Where] = {}
    for i, c in enumerate(clusters_in):
        if c is INVALID:
            continue
        path = f"clusters[{i}]"
        if c["id"] in cseen:
            errors.add(c.at("id"), f"clusters: duplicate cluster id {c['id']!r} "
                       f"(first at line {cseen[c['id']].line})")
            continue
        cseen[c["id"]] = c.at("id")
        if not _ID.fullmatch(c["id"]):
            errors.add(c.at("id"), f"{path}.id: {c['id']!r} may only contain letters, digits, "
                       "'.', '_' and '-'")
        key = tuple(c["key"])
        if len(set(key)) != len(key):
            errors.add(c.at("key"), f"{path}.key: an attribute is listed twice")
        link = None
        if c["link"] is not None:
            link = compile_link(c["link"], path, errors)
            if "cluster" not in key:
                errors.add(c.at("link"), f"{path}.link: has no effect unless key includes "
                           "'cluster' (the linked account cluster), e.g. key: [cluster]")
        elif "cluster" in key:
            errors.add(c.at("key"), f"{path}.key: attribute 'cluster' needs a `link:` "
                       "section (it is the hydra-linked account cluster)")
        clusters.append(ClusterDef(c["id"], key, c["when"], link, c.where))

    budgets: list[BudgetDef] = []
    bseen: dict[str, Where] = {}
    known = list(dict.fromkeys([*(c["id"] for c in clusters_in if c is not INVALID),
                                *(cluster_ids or ())]))
    for i, b in enumerate(budgets_in):
        if b is INVALID:
            continue
        path = f"budgets[{i}]"
        if b["id"] in bseen:
            errors.add(b.at("id"), f"budgets: duplicate budget id {b['id']!r} "
                       f"(first at line {bseen[b['id']].line})")
            continue
        bseen[b["id"]] = b.at("id")
        if not clusters_in:
            errors.add(b.at("id"), f"{path}: no cluster definitions: add a `clusters:` "
                       "section saying which callers share a budget")
            continue
        names = None
        if b["clusters"] is not None:
            for name in b["clusters"]:
                if name not in known:
                    errors.add(b.at("clusters"), f"{path}.clusters: unknown cluster "
                               f"{name!r}{did_you_mean(name, known)} (known: {', '.join(known)})")
            names = frozenset(b["clusters"])
        wseen: dict[str, Where] = {}
        windows = [_window(w, j, path, wseen, errors) for j, w in enumerate(b["windows"])]
        if b["on_exceed"] == "cap_max_tokens" and b["cap_to"] is None:
            errors.add(b.at("on_exceed"), f"{path}.on_exceed: cap_max_tokens needs cap_to")
        if b["on_exceed"] != "cap_max_tokens" and b["cap_to"] is not None:
            errors.add(b.at("cap_to"), f"{path}.cap_to: only used with on_exceed: "
                       "cap_max_tokens")
        w = b["weights"] or {}
        mults = tuple(
            (pat, re.compile(fnmatch.translate(pat)), float(m))
            for pat, m in (b["model_multipliers"] or {}).items()
        )
        if any(x is None for x in windows):
            continue
        budgets.append(BudgetDef(
            id=b["id"], windows=tuple(windows), clusters=names, when=b["when"],
            count=b["count"],
            w_input=float(w.get("input", 1.0)), w_output=float(w.get("output", 1.0)),
            w_cache_read=float(w.get("cache_read", 1.0)),
            w_cache_creation=float(w.get("cache_creation", 1.0)),
            multipliers=mults, max_output_reserve=b["max_output_reserve"],
            default_output=(b["default_output"] if b["default_output"] is not None
                            else b["max_output_reserve"]),
            on_exceed=b["on_exceed"], cap_to=b["cap_to"], shadow=b["shadow"],
            reason=b["reason"], where=b.where,
            probation=compile_probation(b["probation"], path, errors, base),
        ))
    return BudgetsConfig(state, tuple(clusters), tuple(budgets))
