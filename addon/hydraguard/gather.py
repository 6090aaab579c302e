"""Request facts, assembled in one place: the only module that creates or changes a `Facts`.

`Gatherer.gather` resolves the caller (client IP through trusted proxies, account hash),
parses the API call, looks up GeoIP, collects the signals and resolves the cluster, each
of which returns a value that is assigned here. The other writers of a request's facts
are the functions below, called by the pipeline (a body over the cap, a re-keyed cluster)
and by replay (facts read back from a decision log line).
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import apis
from .addresses import IPAddress, parse_ip
from .apis import routes
from .apis.batches import BatchSummary
from .clientip import ClientIpResolver
from .facts import ClusterRef, Facts, for_model
from .geo import GeoInfo
from .identity import account_id, credential, values_of

if TYPE_CHECKING:
    from .apis.batch_parse import BatchParse
    from .clusters.resolve import ClusterResolver
    from .geo import GeoDatabases
    from .overrides import MemoryOverrides
    from .pipeline import RequestView
    from .policy import Policy
    from .signals.collect import SignalCollector

__all__ = ["Gatherer", "decode_body", "facts_from_log", "set_body_too_large", "set_cluster",
           "set_geo", "set_signals"]


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


def _globs(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


_ANTHROPIC_HEADERS = ("x-api-key", "anthropic-version", "anthropic-beta")


class Gatherer:
    """Builds the facts of a request from a RequestView and the gateway's adapters."""

    def __init__(self, policy: Policy, secret: bytes, geo: GeoDatabases | None,
                 signals: SignalCollector, clusters: ClusterResolver,
                 overrides: MemoryOverrides | None = None) -> None:
        """`overrides`: operators' allow / deny of accounts (admin listener)."""
        s = policy.settings
        self.secret = secret
        self.max_body_bytes = s.max_body_bytes
        self.resolver = ClientIpResolver(s.trusted_proxies, s.client_ip_headers)
        self.geo = geo
        self.signals = signals
        self.clusters = clusters
        self.overrides = overrides
        rx = _globs(s.harmless_globs())
        self.harmless = (lambda p: rx.fullmatch(p) is not None) if rx is not None else None

    def route(self, req: RequestView) -> routes.Route:
        """What the request is (apis/routes.py), under these rules' harmless_posts."""
        return routes.route_of(req.method, req.path, req.headers, self.harmless)

    def gather(self, req: RequestView, extra_signals: Mapping[str, Any] | None = None,
               batch: BatchParse | None = None, route: routes.Route | None = None
               ) -> tuple[Facts, bytes | None]:
        """(facts, decoded body of a model call or None). `extra_signals` (authoring tools)
        are added before the cluster is resolved, as if an indicator had set them. `batch`:
        a batch submission parsed beforehand (pipeline.Gateway.preparse); `route`: the
        request's, when the caller has it already."""
        peer = _ip(req.peer)
        caller = self.resolver.examine(peer, req.headers)
        if route is None:
            route = self.route(req)
        api = route.api
        provider = apis.provider_of(api) if api else apis.provider_for_request(
            req.path, req.header_names if req.header_names is not None else
            [h for h in _ANTHROPIC_HEADERS if req.headers(h) is not None])
        cred = credential(provider, req.header_values or values_of(req.headers))
        facts = Facts(
            request_id=req.request_id,
            method=req.method,
            path=req.path.split("?", 1)[0],
            peer_ip=peer,
            client_ip=caller.ip,
            client_ip_source=caller.source,
            account=account_id(self.secret, cred.key) if cred.key else None,
            api=api,
            provider=provider,
            user_agent=(req.headers("user-agent") or "")[:200],
            credential_problem=cred.problem,
            route=route.kind,
            ident=route.ident,
        )
        if caller.conflict:
            facts.signals["headers.forwarding_conflict"] = True
        if cred.problem:
            facts.signals["headers.credential_conflict"] = True
        if self.overrides is not None and facts.account is not None:
            facts.override = self.overrides.lookup(facts.account)
        if self.geo is not None and caller.ip is not None:
            facts.geo = self.geo.lookup(caller.ip)
            if facts.geo.country_mismatch:
                facts.signals["geo.country_mismatch"] = True
        parsed = body = None
        if route.kind == routes.MODEL:
            body, err = decode_body(req.body, req.content_encoding, self.max_body_bytes)
            if body is None:
                facts.body_error = err
            else:
                parsed = apis.parse_request(api, body)
                facts.model = parsed.model
                facts.stream = parsed.stream
                facts.max_output = parsed.max_output
                facts.input_tokens_est = parsed.input_tokens_est
                facts.body_error = parsed.error
                facts.choices, facts.samples = parsed.choices, parsed.samples
                facts.deferred = parsed.deferred
        found = self.signals.observe(facts, req, parsed)
        if found:
            facts.signals.update(found)
        if route.kind == routes.BATCH and batch is not None:
            _set_batch(facts, batch)
            if batch.sample:
                facts.signals.update(self.signals.observe_prompts(facts, batch.sample))
        if extra_signals:
            facts.signals.update(extra_signals)
        set_cluster(facts, self.clusters.resolve(facts))
        if facts.batch is not None and len(facts.batch.parts) > 1 and facts.cluster_ref:
            # every model of a batch must fall in one cluster (a definition keyed or
            # selected by model would otherwise see a mixed batch as a cluster of its own)
            names = {ref.name if ref else None for ref in (
                self.clusters.resolve(for_model(facts, m)) for m in facts.batch.models)}
            if names != {facts.cluster}:
                facts.body_error = ("the models of this batch fall in different budget "
                                    "clusters: submit one batch per model")
        return facts, body


def _set_batch(facts: Facts, batch: BatchParse) -> None:
    """A batch submission's facts: its summary (totals in the usual fields), or why it is
    malformed (body_error) or cannot be metered (unmetered)."""
    facts.body_error = batch.error
    facts.unmetered = batch.unmetered_reason
    facts.ident = batch.ident or facts.ident
    s = batch.summary
    if s is not None:
        facts.batch = s
        facts.model = s.model
        facts.input_tokens_est = s.input_tokens
        facts.max_output = s.output_tokens(0)
    if batch.signals:
        facts.signals.update(batch.signals)


def set_signals(facts: Facts, found: Mapping[str, Any]) -> None:
    """Signals observed after the request was decided (the sample of a batch input file,
    seen when its upload ends)."""
    facts.signals.update(found)


def set_cluster(facts: Facts, ref: ClusterRef | None) -> None:
    """The request's cluster (resolved, or re-keyed by the shared linking)."""
    facts.cluster_ref = ref
    facts.cluster = ref.name if ref is not None else None


def set_body_too_large(facts: Facts) -> None:
    """The body is over the cap (seen from Content-Length or mitmproxy's own limit)."""
    facts.body_error = "too_large"


def set_incomplete(facts: Facts) -> None:
    """The request failed before it could be decided (client went away mid-upload)."""
    facts.body_error = "incomplete request"


def set_geo(facts: Facts, geo: GeoInfo) -> None:
    """A GeoIP answer looked up again (replay with `--relookup-geo`)."""
    facts.geo = geo


# -- facts read back from a decision log line (replay) ---------------------------------------
def _harmless_of(policy: Policy | None) -> Any:
    return None if policy is None else _harmless_test(policy.settings.harmless_globs())


@functools.lru_cache(maxsize=8)
def _harmless_test(globs: tuple[str, ...]) -> Any:
    rx = _globs(globs)
    return (lambda p: rx.fullmatch(p) is not None) if rx is not None else None


def _log_ip(v: Any) -> tuple[Any, bool]:
    """(address, truncated)."""
    if not v:
        return None, False
    if "/" in str(v):
        return ipaddress.ip_network(str(v), strict=False).network_address, True
    return ipaddress.ip_address(str(v)), False


def geo_from_log(g: dict[str, Any] | None) -> GeoInfo | None:
    """Rebuild the GeoInfo that `GeoInfo.to_log()` wrote."""
    if g is None:
        return None
    if g.get("private"):
        return GeoInfo(is_private=True)
    country = g.get("country")
    return GeoInfo(
        found=bool(g.get("found")), country=country,
        registered_country=g.get("registered_country", country),
        represented_country=g.get("represented_country"),
        represented_type=g.get("represented_type"), continent=g.get("continent"),
        subdivisions=tuple(g.get("subdivisions") or ()), is_anycast=bool(g.get("anycast")),
        asn=g.get("asn"), as_org=g.get("as_org"),
        anonymous=frozenset(g.get("anonymous") or ()),
        anonymizer_confidence=g.get("anonymizer_confidence"),
        provider_name=g.get("provider_name"), error=g.get("error"),
    )


def facts_from_log(rec: dict[str, Any], policy: Policy | None = None) -> tuple[Facts, bool]:
    """(facts, ip_was_truncated) from one decision log record. Raises on a broken record.
    The route is worked out again from method, path and upgrade, under ``policy``'s
    harmless_posts when given."""
    client, t1 = _log_ip(rec.get("client_ip"))
    peer, t2 = _log_ip(rec.get("peer_ip"))
    f = Facts(
        request_id=str(rec.get("request_id", "")), method=str(rec["method"]),
        path=str(rec["path"]), peer_ip=peer, client_ip=client,
        client_ip_source=rec.get("client_ip_source") or "peer",
        account=rec.get("account"), api=rec.get("api"),
        provider=(rec.get("api") or "anthropic").split(".")[0],
        model=rec.get("model"), stream=bool(rec.get("stream")),
        max_output=rec.get("max_output"), input_tokens_est=int(rec.get("input_tokens_est") or 0),
        body_error=rec.get("body_error"), geo=geo_from_log(rec.get("geo")),
        signals=dict(rec.get("signals") or {}), cluster=rec.get("cluster"),
        route=routes.route_of(str(rec["method"]), str(rec["path"]),
                              lambda h: rec.get("upgrade") if h == "upgrade" else None,
                              _harmless_of(policy)).kind,
        choices=int(rec.get("choices") or 1), samples=int(rec.get("samples") or 1),
        override=rec.get("override"),
    )
    if f.signals.get("headers.credential_conflict"):
        f.credential_problem = "conflicting credentials"
    b = rec.get("batch")
    if isinstance(b, dict) and isinstance(b.get("summary"), dict):
        f.batch = BatchSummary.from_json(b["summary"])
        f.ident = b.get("id") or b.get("input_file_id")
    if rec.get("unmetered"):
        f.unmetered = str(rec["unmetered"])
    return f, t1 or t2
