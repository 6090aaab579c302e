"""The request pipeline, free of mitmproxy: request view -> facts -> decision -> log record.

The mitmproxy addon (addon.py) and the offline tools (explain, replay, tests) both drive a
`Gateway`. Everything that touches the network or the clock comes in through arguments.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import apis, identity, refusals
from .apis import routes
from .apis.legacy import json_usage, stream_meter
from .batching import BatchDesk
from .budgets.backends import open_backends
from .budgets.driver import Admission, BudgetDriver
from .clusters.resolve import ClusterResolver
from .decide import Decision, decide
from .decision_log import DecisionLog
from .facts import Facts
from .gather import Gatherer, set_body_too_large, set_cluster, set_incomplete
from .geo import GeoDatabases
from .overrides import OverriddenLinks, open_overrides
from .policy import Policy
from .record import decision_record
from .signals.collect import SignalCollector

log = logging.getLogger("hydraguard")

DEMO_SECRET = b"hydraguard-demo-secret-change-me"
HEALTH_PATH = "/__hydraguard/healthz"
OPEN = object()  # Gateway(geo=OPEN): open the policy's GeoIP databases (the default)


@dataclass(slots=True)
class RequestView:
    """The parts of an HTTP request the pipeline reads."""

    method: str
    path: str
    peer: str | None
    headers: Callable[[str], str | None]  # joined value of a header (case-insensitive) or None
    body: bytes = b""
    content_encoding: str = ""
    request_id: str = ""
    tls_ja4: str | None = None  # JA4 of the client's TLS ClientHello, when it spoke TLS to us
    header_names: frozenset[str] | None = None  # lower-cased names of the headers present
    arrived: float | None = None  # when the request began to arrive (clock time; None: now)
    # every line of a header, in order ([] when absent); None: `headers` values count as one
    header_values: Callable[[str], list[str]] | None = None


@dataclass(slots=True)
class Exchange:
    """Per-request state carried from the request to the end of its response."""

    facts: Facts
    decision: Decision
    started: float  # arrival of the request (clock time): the log's `ts`, `duration_ms` start
    decision_us: int
    body: bytes | None = None  # rewritten request body to forward, if any
    meter: Any = None  # apis.StreamMeter for a streamed response
    hide_usage: bool = False
    admission: Admission | None = None
    request_body: bytes | None = None  # the decoded request body (for an output cap rewrite)
    header_edits: tuple[tuple[str, str], ...] = ()  # identity.strip_edits, applied on forward
    logged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    side: Any = None  # batching.py: a batch's parse, an upload's spool, a results meter


def open_geo(policy: Policy, *, auto_reload: bool = True) -> GeoDatabases | None:
    """Open the policy's GeoIP databases, each checked for damage first (blocking for up to
    `geoip.verify_seconds` per file: call it at start-up or in a worker thread, never in a
    request). Raises GeoDatabaseError naming a bad file."""
    g = policy.geoip
    if g is None or not g.paths:
        return None
    return GeoDatabases(dict(g.paths), optional=g.optional, check_interval=g.reload_interval,
                        cache_size=g.cache_size, auto_reload=auto_reload,
                        verify_seconds=g.verify_seconds, max_age_days=g.max_age_days)


class Gateway:
    """One loaded policy plus the adapters it needs (GeoIP, state, log)."""

    def __init__(self, policy: Policy, *, log_path: str | None = None,
                 secret: bytes | None = None, clock: Callable[[], float] = time.time,
                 reuse: Gateway | None = None, files_in_background: bool = False,
                 geo: GeoDatabases | object | None = OPEN) -> None:
        """`reuse`: the gateway this one replaces (hot reload); its GeoIP readers and log are
        shared when their settings did not change, and budget / indicator state is handed
        over through `adopt()` where those classes offer it.

        `files_in_background`: requests never look at GeoIP / list files; the owner calls
        `refresh_files()` (the addon does, every second, in a worker thread).

        `geo`: the policy's databases opened beforehand with `open_geo` (in a worker thread:
        opening checks each file's structure, which takes time); by default the gateway opens
        them itself (or shares those of `reuse`)."""
        self.policy = policy
        self.clock = clock
        self.files_in_background = files_in_background
        self.policy_digest: str | None = None  # set by the reloader: which rules version
        self._log_path_arg, self._secret_arg = log_path, secret
        s = policy.settings
        env_secret = os.environ.get(s.account_secret_env, "")
        if reuse is not None and secret is None and \
                reuse.policy.settings.account_secret_env == s.account_secret_env:
            secret = reuse.secret  # same source: no second warning
        if secret is None and not env_secret:
            log.warning("hydraguard: %s is not set; using the demo account secret "
                        "(account hashes are predictable)", s.account_secret_env)
        self.secret = secret or env_secret.encode() or DEMO_SECRET
        self.shared: set[str] = set()  # resources handed over from `reuse` (not ours to close)
        if geo is not OPEN:
            self.geo = geo  # type: ignore[assignment]
        elif reuse is not None and reuse.geo is not None and \
                reuse.policy.geoip == policy.geoip:
            self.geo = reuse.geo
            reuse.shared.add("geo")
        else:
            self.geo = open_geo(policy, auto_reload=not files_in_background)
        self.signals = SignalCollector(policy.indicators, clock,
                                       auto_reload=not files_in_background)
        self.backends = open_backends(policy.budgets, clock,
                                      previous=reuse.backends if reuse is not None else None)
        # operators' allow / deny / detach (admin listener); the metrics observer (set by the
        # addon when it serves /metrics): both carried over to successors
        self.overrides = open_overrides(
            self.backends.state, reuse.overrides if reuse is not None else None)
        self.metrics: Any = reuse.metrics if reuse is not None else None
        b = policy.budgets
        self.clusters = ClusterResolver(b.clusters if b is not None else (), {
            cid: OverriddenLinks(store, self.overrides, functools.partial(self._linked, cid))
            for cid, store in self.backends.links.items()})
        self.budgets = BudgetDriver(b.budgets if b is not None else (), self.backends.state,
                                    self.clusters, clock, self.backends.history)
        if reuse is not None:
            self.signals.adopt(reuse.signals)  # take over windows whose settings still exist
            reuse.shared.add("signals")
            if self.backends.state is not None and self.backends.state is reuse.backends.state:
                reuse.shared.add("backends")
        self.gatherer = Gatherer(policy, self.secret, self.geo, self.signals, self.clusters,
                                 self.overrides)
        # batch submissions, uploads, results (the addon calls its response-side hooks)
        self.batches = BatchDesk(policy, self.backends.records, self.budgets, self.signals,
                                 clock)
        lp = log_path if log_path else policy.log.path
        if reuse is not None and (reuse.log.path, reuse.log.max_bytes, reuse.log.backups) == (
                lp, policy.log.max_bytes, policy.log.backups):
            self.log = reuse.log
            reuse.shared.add("log")
        else:
            self.log = DecisionLog(lp, policy.log.max_bytes, policy.log.backups)

    def _linked(self, definition: str) -> None:
        """An account was answered a linked cluster it was not in before (metrics)."""
        if self.metrics is not None:
            self.metrics.linked(definition)

    def successor(self, policy: Policy, geo: GeoDatabases | object | None = OPEN) -> Gateway:
        """A gateway for new rules that keeps what still applies (see `reuse`). The caller
        swaps it in with one assignment and retires this one (`aclose_unshared`). `geo`: see
        `__init__`."""
        return Gateway(policy, log_path=self._log_path_arg, secret=self._secret_arg,
                       clock=self.clock, reuse=self,
                       files_in_background=self.files_in_background, geo=geo)

    def keeps_geo(self, policy: Policy) -> bool:
        """A successor for `policy` would share this gateway's GeoIP databases."""
        return self.geo is not None and self.policy.geoip == policy.geoip

    def refresh_files(self) -> None:
        """Re-open GeoIP databases and re-read list files that changed on disk (each at
        most every its reload interval). Blocking file work: call it from a worker thread;
        a new version replaces the old one in one assignment, requests are not held."""
        if self.geo is not None:
            self.geo.maybe_reload()
        self.signals.refresh_files()

    async def aclose_unshared(self) -> None:
        """Close what a successor did not take over (call when no request uses this one)."""
        if "backends" not in self.shared:
            await self.backends.close()
        if "log" not in self.shared:
            self.log.close()
        if "signals" not in self.shared:
            self.signals.close()
        if "geo" not in self.shared and self.geo is not None:
            self.geo.close()

    async def aclose(self) -> None:
        """Close everything, state backends included."""
        await self.backends.close()
        self.close()

    def close(self) -> None:
        """Close files and databases (not the async state backends: see `aclose`)."""
        self.log.close()
        self.signals.close()
        if self.geo is not None:
            self.geo.close()

    # -- request side -------------------------------------------------------------------
    def gather(self, req: RequestView) -> Facts:
        """Facts of a request: caller, account, API, model, stream, token estimate, signals,
        cluster (records the request in the signal windows and link evidence)."""
        return self.gatherer.gather(req)[0]

    def route(self, method: str, path: str, headers: Callable[[str], str | None]
              ) -> routes.Route:
        """What a request is (apis/routes.py): known before its body arrives."""
        return routes.route_of(method, path, headers, self.gatherer.harmless)

    async def preparse(self, req: RequestView) -> Any:
        """A batch submission's heavy parsing, off the event loop, or the batch a results
        read settles (None for other requests); hand it to `begin`."""
        route = self.gatherer.route(req)
        if route.kind in (routes.MODEL, routes.READ, routes.HARMLESS):
            return None
        return await self.batches.preparse(req, route)

    def begin(self, req: RequestView, extra_signals: Mapping[str, Any] | None = None,
              batch: Any = None) -> Exchange:
        """Gather facts and decide by the rules. The caller then runs `admit` (budgets) when
        the decision is not enforced, and answers `denial()` when it is. `extra_signals`:
        signals an authoring tool supplies as if an indicator had set them. `batch`: what
        `preparse` returned (without it an Anthropic batch is parsed here, blocking)."""
        started = self._arrival(req)
        t0 = time.perf_counter_ns()
        route = self.gatherer.route(req)
        if batch is None and route.kind == routes.BATCH:
            batch = self.batches.unparsed(req, route)
        facts, body = self.gatherer.gather(req, extra_signals, getattr(batch, "parse", None),
                                           route)
        if facts.body_error == "too_large":
            decision = refusals.body_too_large(self.policy.settings.max_body_bytes)
        else:
            decision = decide(facts, self.policy)
        ex = Exchange(facts, decision, started, 0, request_body=body, side=batch)
        if not decision.enforced and facts.credential_problem is not None and \
                self.policy.settings.extra_credentials == "strip":
            values = req.header_values or identity.values_of(req.headers)
            ex.header_edits = identity.strip_edits(
                identity.credential(facts.provider, values), values)
        if not decision.enforced and facts.api is not None:
            if body is not None and req.content_encoding.strip().lower() not in (
                    "", "identity"):
                ex.body = body  # forward the decoded body (content-encoding dropped)
            if body and facts.api == apis.OPENAI_CHAT and facts.stream:
                new = apis.with_include_usage(body)
                if new is not None:
                    ex.body, ex.hide_usage = new, True
        ex.decision_us = (time.perf_counter_ns() - t0) // 1000
        return ex

    def _arrival(self, req: RequestView) -> float:
        """When the request began to arrive: the front end's stamp, else now."""
        return req.arrived if req.arrived is not None else self.clock()

    def too_large(self, req: RequestView) -> Exchange:
        """An exchange refused before its body arrived: its Content-Length is over the cap."""
        return self.failed_early(req, "body_size_limit")

    def failed_early(self, req: RequestView, message: str) -> Exchange:
        """An exchange for a request that failed before it could be decided (mitmproxy's hard
        body cap, a client that went away mid-upload): it never reached the upstream."""
        started = self._arrival(req)
        t0 = time.perf_counter_ns()
        facts = self.gatherer.gather(RequestView(req.method, req.path, req.peer, req.headers,
                                                 request_id=req.request_id,
                                                 header_names=req.header_names,
                                                 header_values=req.header_values))[0]
        if "body_size_limit" in message:
            set_body_too_large(facts)
            decision = refusals.body_too_large(self.policy.settings.max_body_bytes)
        else:
            set_incomplete(facts)
            decision = refusals.incomplete_request(message)
        return Exchange(facts, decision, started, (time.perf_counter_ns() - t0) // 1000)

    def denial(self, ex: Exchange) -> tuple[int, bytes, dict[str, str]]:
        """The provider-format error response for an enforced decision."""
        d, f = ex.decision, ex.facts
        kind = d.kind or "permission"
        status, body, headers = apis.error_response(
            f.api, f.provider, kind, d.reason, request_id=f.request_id,
            retry_after=d.retry_after_s)
        if ex.admission is not None and ex.admission.refused:
            headers.update(ex.admission.headers)
        return status, body, headers

    def upstream_failed(self, ex: Exchange, failure: str) -> tuple[int, bytes, dict[str, str]]:
        """The provider-format answer for a forwarded request whose upstream failed
        (`failure`: see upstream.failure_of); the log line gets `upstream_failure`."""
        ex.extra["upstream_failure"] = failure
        d, f = refusals.upstream_failure(failure), ex.facts
        return apis.error_response(f.api, f.provider, d.kind or "upstream", d.reason,
                                   request_id=f.request_id)

    async def admit(self, ex: Exchange) -> None:
        """The budget step, after the rules allowed the request: reserve tokens, or turn the
        decision into a provider-format 429; may cap the request's output tokens. An account
        an operator allowed skips this step (overrides.py)."""
        if ex.facts.override == "allow":
            return
        adm = await self.budgets.admit(ex.facts)
        ex.admission = adm
        if adm.cluster is not None and adm.cluster is not ex.facts.cluster_ref:
            set_cluster(ex.facts, adm.cluster)  # the shared linking named another cluster
        out = adm.outcome
        if out.refused:
            ex.decision = refusals.by_budget(out.rule, out.reason, "rate_limit",
                                             out.retry_after_s, ex.decision.shadow_rules)
            return
        if out.max_output_cap is not None and ex.facts.api is not None:
            if ex.facts.batch is not None:
                new = await self.batches.capped_body(ex, out.max_output_cap)
            else:
                src = ex.body if ex.body is not None else ex.request_body
                new = apis.with_max_output(ex.facts.api, src, out.max_output_cap) \
                    if src else None
            if new is not None:
                ex.body = new

    # -- response side ------------------------------------------------------------------
    def stream_meter(self, ex: Exchange) -> Any:
        """A StreamMeter for a streamed model response (None for other requests)."""
        if ex.facts.api is None or ex.facts.route != routes.MODEL:
            return None
        ex.meter = stream_meter(ex.facts.api, ex.hide_usage, ex.facts.input_tokens_est)
        return ex.meter

    async def finish(self, ex: Exchange, *, status: int | None, body: bytes | None = None,
                     error: str | None = None, answered_by_proxy: bool = False
                     ) -> dict[str, Any]:
        """Close the books on a request (settle its reservation) and write its log line once."""
        if ex.logged:
            return {}
        ex.logged = True  # before any await: `response` and `error` may both try
        usage = None
        usage_source = None
        if ex.meter is not None:
            usage = ex.meter.usage
            usage_source = "stream" if ex.meter.usage_reported else "stream_estimate"
        elif body and ex.facts.route == routes.MODEL and status is not None and status < 400:
            usage, usage_source = json_usage(ex.facts.api, body, ex.facts.input_tokens_est)
        record = self.record(ex, status=status, usage=usage, usage_source=usage_source,
                             error=error, answered_by_proxy=answered_by_proxy)
        if ex.admission is not None:
            failed = answered_by_proxy or (usage is None and (status is None or status >= 400))
            if ex.facts.route == routes.BATCH:  # no answer seen: the batch may exist upstream
                failed = answered_by_proxy or (status is not None and status >= 400)
            try:
                record.update(await self.budgets.settle(ex.admission, usage, failed=failed))
            except Exception as e:  # never lose the log line
                log.exception("hydraguard: settling budgets failed")
                record["budget_error"] = str(e)
        if ex.facts.route not in (routes.MODEL, routes.READ, routes.HARMLESS):
            try:
                record.update(await self.batches.finish(ex, status, body, error))
            except Exception as e:  # never lose the log line
                log.exception("hydraguard: batch bookkeeping failed")
                record["batch_error"] = f"{type(e).__name__}: {e}"
        self.log.write(record)
        if self.metrics is not None:
            d = ex.decision
            self.metrics.observe(record, d.kind if d.enforced else None)
        return record

    def record(self, ex: Exchange, *, status: int | None, usage: Any, usage_source: str | None,
               error: str | None, answered_by_proxy: bool) -> dict[str, Any]:
        """The decision log line for an exchange (no key, no prompt text; record.py)."""
        return decision_record(ex, truncate=self.policy.log.truncate_ip, now=self.clock(),
                               policy_digest=self.policy_digest, status=status, usage=usage,
                               usage_source=usage_source, error=error,
                               answered_by_proxy=answered_by_proxy)


def header_getter(pairs: Mapping[str, str]) -> Callable[[str], str | None]:
    """A case-insensitive header lookup over a plain mapping (for tools and tests)."""
    lowered = {k.lower(): v for k, v in pairs.items()}
    return lowered.get
