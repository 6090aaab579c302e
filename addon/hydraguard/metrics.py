"""Prometheus metrics of a running proxy, served by the admin listener (`GET /metrics`).

Counters and histograms are derived in one place, `Metrics.observe`, from the decision log
record that `pipeline.Gateway.finish` writes for every request (the log and the metrics
cannot disagree); gauges (linked clusters, state backend up, overrides in force) and the
reload counts are read when scraped. Every label takes a bounded set of values: API names,
actions, rule and budget ids of the loaded rules, refusal kinds, signal names of the
signal catalogue (`signals.collect.possible_signals`; any other name counts as "other"),
cluster definition ids; never an account, a cluster id or an address.

Each `Metrics` has its own `CollectorRegistry` (not prometheus_client's global one), so
several can live in one process (tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .signals.collect import possible_signals

if TYPE_CHECKING:
    from .pipeline import Gateway
    from .reload import RulesWatcher

__all__ = ["CONTENT_TYPE", "Metrics"]

log = logging.getLogger("hydraguard")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DECISION_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                    50e-3, 0.1, 0.25)
ROUNDTRIP_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25,
                     0.5, 1.0, 2.5)
GEO_ROLES = ("location", "asn", "anonymous")

Source = Callable[[], "tuple[Gateway | None, RulesWatcher | None]"]


class Metrics:
    """The proxy's metrics (see module doc). `source()` gives the gateway and rules watcher
    in force, read at scrape time."""

    def __init__(self, source: Source) -> None:
        self.source = source
        disable_created_metrics()  # no `_created` series: they only double the exposition
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "hydraguard_requests", "Requests by API, action, deciding rule and stage (rule: "
            "the rules or a built-in refusal; budget: a token budget refused it)",
            ["api", "action", "rule", "stage"], registry=r)
        self.reserved = Counter("hydraguard_budget_tokens_reserved",
                                "Tokens reserved before forwarding, by budget", ["budget"],
                                registry=r)
        self.charged = Counter("hydraguard_budget_tokens_charged",
                               "Tokens charged after the response (real usage), by budget",
                               ["budget"], registry=r)
        self.refusals = Counter("hydraguard_refusals", "Refusals the proxy answered, by kind",
                                ["kind"], registry=r)
        self.geo = Counter("hydraguard_geoip_lookups", "GeoIP lookups by result (found, "
                           "not_found, private, error)", ["result"], registry=r)
        self.geo_errors = Counter("hydraguard_geoip_errors", "Failed GeoIP lookups (damaged "
                                  "database) by database role", ["database"], registry=r)
        self.signals = Counter("hydraguard_signals", "Requests on which a signal was set, by "
                               "signal name", ["signal"], registry=r)
        self.links = Counter("hydraguard_cluster_links", "Accounts answered a linked cluster "
                             "they were not in before, by cluster definition", ["definition"],
                             registry=r)
        self.upstream_errors = Counter(
            "hydraguard_upstream_errors", "Upstream failures: http_5xx, http_429 (answered "
            "by the upstream); unreachable, failed, connect_timeout, read_timeout (answered "
            "by the proxy); interrupted (a response cut short)",
            ["kind"], registry=r)
        self.overridden = Counter("hydraguard_override_requests", "Requests of accounts an "
                                  "operator allowed or denied", ["override"], registry=r)
        self.decision = Histogram("hydraguard_decision_seconds", "Time to gather the facts and "
                                  "decide by the rules", buckets=DECISION_BUCKETS, registry=r)
        self.roundtrip = Histogram("hydraguard_state_roundtrip_seconds", "Redis script calls of "
                                   "the budget state, by result", ["result"],
                                   buckets=ROUNDTRIP_BUCKETS, registry=r)
        self.cluster_stats: dict[str, tuple[int, int]] = {}  # definition -> (count, largest)
        self._known: tuple[int, frozenset[str]] = (0, frozenset())
        self._failed = False
        r.register(_OnScrape(self))

    # -- fed by the pipeline ---------------------------------------------------------------
    def attach(self, gw: Gateway) -> None:
        """Observe `gw` (and its Redis state's round trips); call for every new gateway."""
        gw.metrics = self
        state = gw.backends.state
        if state is not None and hasattr(state, "observer"):
            state.observer = self.state_call

    def state_call(self, seconds: float, ok: bool) -> None:
        """One Redis script call of the budget state took `seconds`."""
        self.roundtrip.labels("ok" if ok else "error").observe(seconds)

    def linked(self, definition: str) -> None:
        """An account moved into a linked cluster of `definition`."""
        self.links.labels(definition).inc()

    def _signal_names(self, gw: Gateway | None) -> frozenset[str]:
        ind = gw.policy.indicators if gw is not None else None
        if self._known[0] != id(ind) or not self._known[1]:
            self._known = (id(ind), possible_signals(ind))
        return self._known[1]

    def observe(self, rec: dict[str, Any], refusal_kind: str | None) -> None:
        """Count one decision log record (`refusal_kind`: the kind of an enforced refusal).
        Never raises: a failure is logged once and the request goes on."""
        try:
            self._observe(rec, refusal_kind)
        except Exception:
            if not self._failed:
                self._failed = True
                log.exception("hydraguard: updating metrics failed")

    def _observe(self, rec: dict[str, Any], refusal_kind: str | None) -> None:
        stage = "budget" if rec.get("stage") == "budget" else "rule"
        self.requests.labels(rec.get("api") or "none", rec.get("action") or "none",
                             rec.get("rule") or "none", stage).inc()
        if refusal_kind is not None:
            self.refusals.labels(refusal_kind).inc()
        for e in rec.get("budget") or ():
            if e.get("reserved"):
                self.reserved.labels(e["id"]).inc(e["reserved"])
            if e.get("charged"):
                self.charged.labels(e["id"]).inc(e["charged"])
        geo = rec.get("geo")
        if geo is not None:
            self._geo(geo)
        sig = rec.get("signals")
        if sig:
            known = self._signal_names(self.source()[0])
            for name in sig:
                self.signals.labels(name if name in known else "other").inc()
        kind = _upstream_error(rec)
        if kind is not None:
            self.upstream_errors.labels(kind).inc()
        if rec.get("override"):
            self.overridden.labels(rec["override"]).inc()
        us = rec.get("decision_us")
        if us is not None:
            self.decision.observe(us / 1e6)

    def _geo(self, geo: dict[str, Any]) -> None:
        if geo.get("private"):
            self.geo.labels("private").inc()
            return
        err = geo.get("error")
        if err:
            self.geo.labels("error").inc()
            for part in str(err).split("; "):
                role = part.split(" ", 1)[0]
                self.geo_errors.labels(role if role in GEO_ROLES else "other").inc()
        else:
            self.geo.labels("found" if geo.get("found") else "not_found").inc()

    # -- scraping --------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the link stores' cluster counts (shared ones over Redis) before a scrape."""
        gw = self.source()[0]
        if gw is None:
            return
        stats = {}
        for definition, store in gw.backends.links.items():
            view = getattr(store, "view", None)
            if view is None:
                continue
            try:
                stats[definition] = await view().summary()
            except Exception as e:  # Redis down: leave the definition out of this scrape
                log.debug("hydraguard: cluster summary of %s failed: %s", definition, e)
        self.cluster_stats = stats

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


UPSTREAM_FAILURES = frozenset({"unreachable", "failed", "connect_timeout", "read_timeout"})


def _upstream_error(rec: dict[str, Any]) -> str | None:
    failure = rec.get("upstream_failure")
    if failure:  # answered by the proxy for a failed or silent upstream (upstream.py)
        return failure if failure in UPSTREAM_FAILURES else "other"
    up = rec.get("upstream_status")
    if rec.get("error"):
        return None if rec.get("status") is None else "interrupted"
    if up is None:
        return None
    if up >= 500:
        return "http_5xx"
    return "http_429" if up == 429 else None


class _OnScrape(Collector):
    """Gauges and counters read from the running proxy when scraped."""

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        gw, watcher = self.m.source()
        count = GaugeMetricFamily("hydraguard_clusters", "Linked clusters (two or more "
                                  "accounts) by cluster definition", labels=["definition"])
        largest = GaugeMetricFamily("hydraguard_cluster_largest_size", "Accounts in the "
                                    "largest linked cluster", labels=["definition"])
        for definition, (n, big) in sorted(self.m.cluster_stats.items()):
            count.add_metric([definition], n)
            largest.add_metric([definition], big)
        yield count
        yield largest
        reloads = CounterMetricFamily("hydraguard_reloads", "Rules changes on disk: applied "
                                      "(ok) or rejected (failed)", labels=["result"])
        reloads.add_metric(["ok"], watcher.reloads if watcher is not None else 0)
        reloads.add_metric(["failed"], watcher.rejected if watcher is not None else 0)
        yield reloads
        if gw is None:
            return
        up = GaugeMetricFamily("hydraguard_state_up", "Budget state backend usable (1) or "
                               "down (0; Redis circuit breaker open)", labels=["backend"])
        state = gw.backends.state
        if state is not None:
            backend = "redis" if hasattr(state, "breaker") else "memory"
            up.add_metric([backend], 1 if getattr(state, "healthy", True) else 0)
        yield up
        ov = GaugeMetricFamily("hydraguard_overrides", "Operator overrides in force, by kind",
                               labels=["kind"])
        for kind, n in gw.overrides.counts().items():
            ov.add_metric([kind], n)
        yield ov
