"""The request pipeline, free of mitmproxy: request view -> facts -> decision -> log record.

The mitmproxy addon (addon.py) and the offline tools (explain, replay, tests) both drive a
`Gateway`. Everything that touches the network or the clock comes in through arguments.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import apis
from .addresses import IPAddress, parse_ip
from .clientip import ClientIpResolver
from .decide import Decision, decide
from .decision_log import DecisionLog, iso_time, truncate_ip
from .facts import Facts
from .geo import GeoDatabases
from .identity import account_id, api_key_from
from .indicators import Indicators
from .metering import Admission, Metering
from .policy import Policy

log = logging.getLogger("hydraguard")

DEMO_SECRET = b"hydraguard-demo-secret-change-me"
HEALTH_PATH = "/__hydraguard/healthz"


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


@dataclass(slots=True)
class Exchange:
    """Per-request state carried from the request to the end of its response."""

    facts: Facts
    decision: Decision
    started: float
    decision_us: int
    body: bytes | None = None  # rewritten request body to forward, if any
    meter: Any = None  # apis.StreamMeter for a streamed response
    hide_usage: bool = False
    admission: Admission | None = None
    logged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def decode_body(raw: bytes, encoding: str, cap: int) -> tuple[bytes | None, str | None]:
    """(body, error). gzip/deflate are inflated with a hard size cap (no zip bombs)."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        if len(raw) > cap:
            return None, "too_large"
        return raw, None
    if enc in ("gzip", "x-gzip", "deflate"):
        wbits = 47 if enc != "deflate" else 15  # 47: auto-detect gzip/zlib header
        try:
            d = zlib.decompressobj(wbits)
            out = d.decompress(raw, cap + 1)
            if len(out) > cap or d.unconsumed_tail:
                return None, "too_large"
            return out, None
        except zlib.error:
            if enc == "deflate":
                try:
                    d = zlib.decompressobj(-15)
                    out = d.decompress(raw, cap + 1)
                    if len(out) > cap or d.unconsumed_tail:
                        return None, "too_large"
                    return out, None
                except zlib.error:
                    pass
            return None, f"request body is not valid {enc}"
    return None, f"unsupported content-encoding {enc!r}"


_parse_peer = functools.lru_cache(maxsize=4096)(parse_ip)  # peers repeat: parse once


def _ip(value: str | None) -> IPAddress | None:
    """The peer address as an ipaddress object (IPv4-mapped IPv6 unmapped)."""
    return _parse_peer(value) if value else None


def open_geo(policy: Policy, *, auto_reload: bool = True) -> GeoDatabases | None:
    """Open the policy's GeoIP databases. Raises GeoDatabaseError naming a bad file."""
    g = policy.geoip
    if g is None or not g.paths:
        return None
    return GeoDatabases(dict(g.paths), optional=g.optional, check_interval=g.reload_interval,
                        cache_size=g.cache_size, auto_reload=auto_reload)


class Gateway:
    """One loaded policy plus the adapters it needs (GeoIP, state, log)."""

    def __init__(self, policy: Policy, *, log_path: str | None = None,
                 secret: bytes | None = None, clock: Callable[[], float] = time.time,
                 reuse: Gateway | None = None, files_in_background: bool = False) -> None:
        """`reuse`: the gateway this one replaces (hot reload); its GeoIP readers and log are
        shared when their settings did not change, and budget / indicator state is handed
        over through `adopt()` where those classes offer it.

        `files_in_background`: requests never look at GeoIP / list files; the owner calls
        `refresh_files()` (the addon does, every second, in a worker thread)."""
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
        self.resolver = ClientIpResolver(s.trusted_proxies, s.client_ip_headers)
        self.shared: set[str] = set()  # resources handed over from `reuse` (not ours to close)
        if reuse is not None and reuse.geo is not None and reuse.policy.geoip == policy.geoip:
            self.geo = reuse.geo
            reuse.shared.add("geo")
        else:
            self.geo = open_geo(policy, auto_reload=not files_in_background)
        self.indicators = Indicators(policy.indicators, clock,
                                     auto_reload=not files_in_background)
        self.metering = Metering(policy.budgets, clock)
        if reuse is not None:
            for name in ("indicators", "metering"):
                mine, old = getattr(self, name), getattr(reuse, name)
                adopt = getattr(mine, "adopt", None)
                if adopt is not None:
                    adopt(old)  # take over state whose definitions still exist
                    reuse.shared.add(name)
        lp = log_path if log_path else policy.log.path
        if reuse is not None and (reuse.log.path, reuse.log.max_bytes, reuse.log.backups) == (
                lp, policy.log.max_bytes, policy.log.backups):
            self.log = reuse.log
            reuse.shared.add("log")
        else:
            self.log = DecisionLog(lp, policy.log.max_bytes, policy.log.backups)

    def successor(self, policy: Policy) -> Gateway:
        """A gateway for new rules that keeps what still applies (see `reuse`). The caller
        swaps it in with one assignment and retires this one (`aclose_unshared`)."""
        return Gateway(policy, log_path=self._log_path_arg, secret=self._secret_arg,
                       clock=self.clock, reuse=self,
                       files_in_background=self.files_in_background)

    def refresh_files(self) -> None:
        """Re-open GeoIP databases and re-read list files that changed on disk (each at
        most every its reload interval). Blocking file work: call it from a worker thread;
        a new version replaces the old one in one assignment, requests are not held."""
        if self.geo is not None:
            self.geo.maybe_reload()
        self.indicators.refresh_files()

    async def aclose_unshared(self) -> None:
        """Close what a successor did not take over (call when no request uses this one)."""
        if "metering" not in self.shared:
            await self.metering.close()
        if "log" not in self.shared:
            self.log.close()
        if "indicators" not in self.shared:
            self.indicators.close()
        if "geo" not in self.shared and self.geo is not None:
            self.geo.close()

    async def aclose(self) -> None:
        """Close everything, state backends included."""
        await self.metering.close()
        self.close()

    def close(self) -> None:
        """Close files and databases (not the async state backends: see `aclose`)."""
        self.log.close()
        self.indicators.close()
        if self.geo is not None:
            self.geo.close()

    # -- request side -------------------------------------------------------------------
    def gather(self, req: RequestView) -> Facts:
        """Facts of a request: caller, account, API, model, stream, token estimate, signals."""
        return self._gather(req)[0]

    def _gather(self, req: RequestView) -> tuple[Facts, bytes | None]:
        """(facts, decoded body of a model call or None)."""
        peer = _ip(req.peer)
        client, source = self.resolver.resolve(peer, req.headers)
        api = apis.api_for_path(req.method, req.path)
        key = api_key_from(req.headers)
        facts = Facts(
            request_id=req.request_id,
            method=req.method,
            path=req.path.split("?", 1)[0],
            peer_ip=peer,
            client_ip=client,
            client_ip_source=source,
            account=account_id(self.secret, key) if key else None,
            api=api,
            provider=apis.provider_of(api) if api else apis.provider_for_request(
                req.path, req.headers),
            user_agent=(req.headers("user-agent") or "")[:200],
        )
        if self.geo is not None and client is not None:
            facts.geo = self.geo.lookup(client)
            if facts.geo.country_mismatch:
                facts.signals["geo.country_mismatch"] = True
        parsed = body = None
        if api is not None:
            body, err = decode_body(req.body, req.content_encoding,
                                    self.policy.settings.max_body_bytes)
            if body is None:
                facts.body_error = err
            else:
                parsed = apis.parse_request(api, body)
                facts.model = parsed.model
                facts.stream = parsed.stream
                facts.max_output = parsed.max_output
                facts.input_tokens_est = parsed.input_tokens_est
                facts.body_error = parsed.error
        self.indicators.observe(facts, req, parsed)
        self.metering.resolve_cluster(facts)
        return facts, body

    def begin(self, req: RequestView) -> Exchange:
        """Gather facts and decide. The caller answers `denial()` when `decision.enforced`."""
        t0 = time.perf_counter_ns()
        facts, body = self._gather(req)
        if facts.body_error == "too_large":
            decision = Decision("deny", "body_too_large",
                                f"request body exceeds {self.policy.settings.max_body_bytes} "
                                "bytes", kind="too_large")
        else:
            decision = decide(facts, self.policy)
        ex = Exchange(facts, decision, self.clock(), 0)
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

    def failed_early(self, req: RequestView, message: str) -> Exchange:
        """An exchange for a request that failed before it could be decided (mitmproxy's hard
        body cap, a client that went away mid-upload): it never reached the upstream."""
        t0 = time.perf_counter_ns()
        facts = self._gather(RequestView(req.method, req.path, req.peer, req.headers,
                                         request_id=req.request_id))[0]
        if "body_size_limit" in message:
            facts.body_error = "too_large"
            decision = Decision("deny", "body_too_large", "request body exceeds "
                                f"{self.policy.settings.max_body_bytes} bytes",
                                kind="too_large")
        else:
            facts.body_error = "incomplete request"
            decision = Decision("deny", "incomplete_request", message, kind="invalid_request")
        return Exchange(facts, decision, self.clock(), (time.perf_counter_ns() - t0) // 1000)

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

    async def admit(self, ex: Exchange, body: bytes | None) -> None:
        """The budget step, after the rules allowed the request: reserve tokens, or turn the
        decision into a provider-format 429; may cap the request's output tokens."""
        adm = await self.metering.admit(ex.facts)
        ex.admission = adm
        if adm.refused and not adm.shadow:
            ex.decision = Decision("throttle", adm.rule, adm.reason, kind=adm.kind,
                                   retry_after_s=adm.retry_after_s,
                                   shadow_rules=ex.decision.shadow_rules)
            return
        if adm.max_output_cap is not None and ex.facts.api is not None:
            src = ex.body if ex.body is not None else body
            new = apis.with_max_output(ex.facts.api, src, adm.max_output_cap) if src else None
            if new is not None:
                ex.body = new

    # -- response side ------------------------------------------------------------------
    def stream_meter(self, ex: Exchange) -> Any:
        """A StreamMeter for a streamed model response (None for other requests)."""
        if ex.facts.api is None:
            return None
        ex.meter = apis.make_stream_meter(ex.facts.api, hide_usage_chunk=ex.hide_usage,
                                          input_tokens_est=ex.facts.input_tokens_est)
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
        elif body and ex.facts.api is not None and status is not None and status < 400:
            usage = apis.usage_from_json(ex.facts.api, body)
            usage_source = "json" if usage is not None else None
        record = self.record(ex, status=status, usage=usage, usage_source=usage_source,
                             error=error, answered_by_proxy=answered_by_proxy)
        if ex.admission is not None:
            failed = answered_by_proxy or (usage is None and (status is None or status >= 400))
            try:
                record.update(await self.metering.settle(ex.admission, usage, failed=failed))
            except Exception as e:  # never lose the log line
                log.exception("hydraguard: settling budgets failed")
                record["budget_error"] = str(e)
        self.log.write(record)
        return record

    def record(self, ex: Exchange, *, status: int | None, usage: Any, usage_source: str | None,
               error: str | None, answered_by_proxy: bool) -> dict[str, Any]:
        """The decision log line for an exchange (no key, no prompt text)."""
        f, d = ex.facts, ex.decision
        trunc = self.policy.log.truncate_ip
        rec: dict[str, Any] = {
            "ts": iso_time(ex.started),
            "request_id": f.request_id,
            "client_ip": truncate_ip(f.client_ip) if trunc else (
                str(f.client_ip) if f.client_ip else None),
            "client_ip_source": f.client_ip_source,
            "peer_ip": truncate_ip(f.peer_ip) if trunc else (
                str(f.peer_ip) if f.peer_ip else None),
            "account": f.account,
            "method": f.method,
            "path": f.path,
            "api": f.api,
            "model": f.model,
            "stream": f.stream,
            "max_output": f.max_output,
            "input_tokens_est": f.input_tokens_est,
            "action": d.action,
            "rule": d.rule,
            "reason": d.reason,
            "shadow": d.shadow,
            "shadow_rules": list(d.shadow_rules),
            "enforced": d.enforced,
            "status": status,
            "upstream_status": None if answered_by_proxy else status,
            "input_tokens": usage.total_input if usage is not None else None,
            "output_tokens": usage.output_tokens if usage is not None else None,
            "usage_source": usage_source,
            "decision_us": ex.decision_us,
            "duration_ms": round((self.clock() - ex.started) * 1000, 3),
        }
        if f.body_error:
            rec["body_error"] = f.body_error
        if f.geo is not None:
            rec["geo"] = f.geo.to_log()
        if f.signals:
            rec["signals"] = f.signals
        if f.cluster is not None:
            rec["cluster"] = f.cluster
        if ex.admission is not None and ex.admission.refused and not ex.admission.shadow:
            rec["stage"] = "budget"  # decided by the budget step, not by a rule (for replay)
        if self.policy_digest:
            rec["policy"] = self.policy_digest
        if error:
            rec["error"] = error
        rec.update(ex.extra)
        return rec


def header_getter(pairs: Mapping[str, str]) -> Callable[[str], str | None]:
    """A case-insensitive header lookup over a plain mapping (for tools and tests)."""
    lowered = {k.lower(): v for k, v in pairs.items()}
    return lowered.get
