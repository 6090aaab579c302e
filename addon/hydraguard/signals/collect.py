"""Fills request facts with proxy / coordination signals (issue #4). Pure CPU, bounded memory.

Configured by the `indicators:` section (policy/indicator_sections.py); a switched-off
indicator costs nothing per request. Signals (names are stable; rules read them with
`signal:` / `score:` and the decision log writes them under "signals"):

Boolean signals are written only when true (a missing signal reads as false in rules);
numbers are written whenever the indicator applies.

Distinct counts (tls.ja4_accounts, behaviour.*_per_*, template.accounts) are exact up to 32
members in the window and estimates above (a windowed HyperLogLog, sketch.py: about 7 %
standard error from 33 to a few hundred, 9 % above, counting members seen within the window
or up to a quarter window earlier); all saturate at their configured member cap. Keys and
members are known by 64-bit hashes (table.py, sketch.py): two would be confused with odds of
about 1 in 10^7 at a million keys.

ip (client IP; flags need geoip `anonymous`, ASN lists need geoip `asn`):
  ip.anonymous, ip.anonymous_vpn, ip.hosting, ip.public_proxy, ip.residential_proxy,
  ip.tor_exit                bool  Anonymous-IP database flags
  ip.anonymizer_confidence   int   1-99 (Anonymous Plus databases)
  ip.hosting_asn, ip.proxy_asn bool the client's ASN is in hosting_asns / proxy_asns
  ip.list.<name>             bool  the client IP is in the CIDR list file <name>
headers:
  headers.proxy              bool  a proxy header is present
  headers.proxy_names        list  their lower-cased names, sorted. Via, Proxy-Connection,
                                   X-Proxy-ID, ... count from any peer; forwarding headers
                                   (Forwarded, X-Forwarded-For, X-Real-IP, ...) from untrusted
                                   peers, and from trusted peers when the chain holds hops left
                                   of the client address (the client or its proxy sent them)
set by the pipeline whatever `indicators:` says (gather.py):
  geo.country_mismatch       bool  GeoIP country differs from the registered country
  headers.forwarding_conflict bool a trusted peer sent Forwarded and X-Forwarded-For naming
                                   different clients (settings.client_ip_headers decided)
  headers.credential_conflict bool credential headers disagree or repeat (x-api-key beside
                                   the Bearer token of an OpenAI call, two x-api-key lines...;
                                   settings.extra_credentials refuses or strips them)
tls (only for clients that spoke TLS to hydraguard):
  tls.ja4                    str   JA4 of the connection's ClientHello
  tls.ja4_accounts           int   distinct accounts seen with this JA4 in the window (est.)
  tls.claimed_runtime        str   runtime claimed by X-Stainless-* / User-Agent (python, node..)
  tls.sdk_mismatch           bool  the claimed runtime is in sdk_fingerprints and no listed
                                   JA4 / prefix matches
behaviour (requests with an account only):
  behaviour.accounts_per_ip, behaviour.accounts_per_v4_24 (IPv4) or
  behaviour.accounts_per_v6_64 (IPv6), behaviour.ips_per_account, behaviour.asns_per_account,
  behaviour.countries_per_account  int  distinct counts in the window (estimates above 32)
  behaviour.requests_per_account   float requests in the sliding rate window
prompts (model calls only; never any prompt text):
  prompt.<pattern name>      bool  the pattern matched the system prompt / last user turn
  template.id                str   id (t-<16 hex>) of the near-duplicate template (MinHash)
  template.accounts          int   distinct accounts using that template in the window (est.)
  template.batch_templates   int   batch submissions: distinct templates among its prompts
                                   (observe_prompts: all prompts, or a sample of 32)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..addresses import CidrSet, header_hops, trusted_walk
from ..facts import Facts
from .behaviour import BehaviourConfig, BehaviourTracker, DistinctCounter
from .iplists import ListFile
from .ja4 import ja4 as _ja4
from .ja4 import sdk_runtime_claim
from .prompts import PromptPatterns
from .proxy_headers import FORWARDING_HEADERS, PROXY_HEADERS
from .templates import TemplateMatcher

log = logging.getLogger("hydraguard")

ANONYMOUS_SIGNALS = {
    "is_anonymous": "ip.anonymous",
    "is_anonymous_vpn": "ip.anonymous_vpn",
    "is_hosting_provider": "ip.hosting",
    "is_public_proxy": "ip.public_proxy",
    "is_residential_proxy": "ip.residential_proxy",
    "is_tor_exit_node": "ip.tor_exit",
}
BEHAVIOUR_SIGNALS = (
    "behaviour.accounts_per_ip", "behaviour.accounts_per_v4_24", "behaviour.accounts_per_v6_64",
    "behaviour.ips_per_account", "behaviour.asns_per_account", "behaviour.countries_per_account",
    "behaviour.requests_per_account",
)
PIPELINE_SIGNALS = (  # set by gather.py whatever the indicators, not by an indicator
    "geo.country_mismatch", "headers.forwarding_conflict", "headers.credential_conflict",
)


def possible_signals(settings: Any) -> frozenset[str]:
    """Every signal name that can be set under these (compiled) indicator settings; a rule
    testing another name can never match (`hydraguard check` warns about it). Kept next to
    the code that sets them; a test checks that nothing else is ever set."""
    names = set(PIPELINE_SIGNALS)
    if settings is None:
        return frozenset(names)
    if settings.ip is not None:
        if settings.ip.anonymous:
            names.update(ANONYMOUS_SIGNALS.values())
            names.add("ip.anonymizer_confidence")
        names.update(("ip.hosting_asn", "ip.proxy_asn"))
        names.update(f"ip.list.{spec.name}" for spec in settings.ip.lists)
    if settings.headers is not None:
        names.update(("headers.proxy", "headers.proxy_names"))
    if settings.tls is not None:
        names.update(("tls.ja4", "tls.ja4_accounts", "tls.claimed_runtime", "tls.sdk_mismatch"))
    if settings.behaviour is not None:
        names.update(BEHAVIOUR_SIGNALS)
    p = settings.prompts
    if p is not None:
        names.update(f"prompt.{x.name}" for x in p.patterns or ())
        if p.templates is not None:
            names.update(("template.id", "template.accounts", "template.batch_templates"))
    return frozenset(names)


_CHAIN_HEADERS = ("forwarded", "x-forwarded-for")
_CLAIM_HEADERS = ("x-stainless-lang", "x-stainless-runtime", "user-agent")

Step = Callable[[Facts, Any, Any, dict[str, Any]], None]


class SignalCollector:
    """All configured signals (the rules' `indicators:` section). `observe` returns the
    named signals of one request; gather.py puts them into the facts."""

    def __init__(self, settings: Any, clock: Callable[[], float], *,
                 auto_reload: bool = True) -> None:
        """``auto_reload=False``: list files are re-read only by ``refresh_files()``."""
        self.settings = settings
        self.clock = clock
        self.auto_reload = auto_reload
        self._steps: tuple[Step, ...] = ()
        self._tls_on = False
        self.lists: dict[str, ListFile] = {}
        self.ja4_accounts: DistinctCounter | None = None
        self.behaviour: BehaviourTracker | None = None
        self.patterns: PromptPatterns | None = None
        self.templates: TemplateMatcher | None = None
        if settings is None:
            return
        steps: list[Step] = []
        if settings.ip is not None:
            self._setup_ip(settings.ip)
            steps.append(self._ip)
        if settings.headers is not None:
            self._setup_headers(settings.headers)
            steps.append(self._headers)
        if settings.tls is not None:
            t = settings.tls
            self._tls_on = True
            self.ja4_accounts = DistinctCounter(t.window, t.max_keys, t.max_accounts_per_key,
                                                clock)
            self._sdk = {runtime: prefixes for runtime, prefixes in t.sdk_fingerprints}
            steps.append(self._tls)
        if settings.behaviour is not None:
            b = settings.behaviour
            self.behaviour = BehaviourTracker(
                BehaviourConfig(window_s=b.window, rate_window_s=b.rate_window,
                                max_keys=b.max_keys, max_members_per_key=b.max_members_per_key),
                clock)
            steps.append(self._behaviour)
        if settings.prompts is not None:
            p = settings.prompts
            if p.patterns:
                self.patterns = PromptPatterns([(x.name, x.regex, x.flags) for x in p.patterns])
                for err in self.patterns.errors:  # validated at load: should not happen
                    log.error("hydraguard: prompt pattern skipped: %s", err)
                self._pattern_signal = {x.name: f"prompt.{x.name}" for x in p.patterns}
            if p.templates is not None:
                t = p.templates
                self.templates = TemplateMatcher(
                    window_s=t.window, max_templates=t.max_templates,
                    max_accounts_per_template=t.max_accounts_per_template, clock=clock,
                    threshold=t.threshold, min_words=t.min_words, max_chars=t.max_chars,
                    text=t.text)
                self._template_min_chars = t.min_chars
            if self.patterns is not None or self.templates is not None:
                steps.append(self._prompts)
        self._steps = tuple(steps)

    # -- TLS (per connection) ---------------------------------------------------------------
    def client_hello(self, client_hello: Any) -> str | None:
        """JA4 of a TLS ClientHello (None when TLS indicators are off). Never raises."""
        if not self._tls_on:
            return None
        try:
            return _ja4(client_hello) or None
        except Exception:  # hostile input must never break the handshake
            return None

    # -- per request ------------------------------------------------------------------------
    def observe(self, facts: Facts, req: Any, parsed: Any) -> dict[str, Any]:
        """The signals of one request (req: pipeline.RequestView, parsed:
        apis.ParsedRequest), computed from its facts so far."""
        out: dict[str, Any] = {}
        for step in self._steps:
            try:
                step(facts, req, parsed, out)
            except Exception:  # a broken indicator must not fail the request
                log.exception("hydraguard: indicator %s failed", step.__name__)
        return out

    def observe_prompts(self, facts: Facts, prompts: Any) -> dict[str, Any]:
        """The prompt signals of a batch: every prompt of ``prompts`` (each with
        ``system_text`` and ``last_user_text``: all of a small batch's, a uniform sample of a
        large one's) is seen by the prompt patterns and the template tracker, as the request
        of one model call would be. ``prompt.<name>``: any prompt matched; ``template.id``: the
        template most of them matched (ties: the first seen), ``template.accounts`` its
        accounts; ``template.batch_templates``: how many distinct templates they matched."""
        if self.patterns is None and self.templates is None:
            return {}
        out: dict[str, Any] = {}
        seen: dict[str, tuple[int, int]] = {}  # template id -> (count, accounts)
        for p in prompts:
            one: dict[str, Any] = {}
            try:
                self._prompts(facts, None, p, one)
            except Exception:  # a broken indicator must not fail the request
                log.exception("hydraguard: prompt indicators failed on a batch prompt")
                continue
            tid = one.pop("template.id", None)
            n = one.pop("template.accounts", 0)
            out.update(one)
            if tid:
                c, _ = seen.get(tid, (0, 0))
                seen[tid] = (c + 1, n)
        if seen:
            tid = max(seen, key=lambda t: seen[t][0])  # first seen wins a tie
            out["template.id"] = tid
            out["template.accounts"] = seen[tid][1]
            out["template.batch_templates"] = len(seen)
        return out

    def adopt(self, old: SignalCollector) -> None:
        """Hot reload: take over the windows of `old` (the indicators of the rules being
        replaced) whose settings did not change, so counts survive an unrelated rules edit.
        Changed settings start empty; CIDR lists with the same file and format are kept."""
        new_s, old_s = self.settings, old.settings
        if new_s is None or old_s is None:
            return
        if new_s.tls is not None and new_s.tls == old_s.tls and old.ja4_accounts is not None:
            self.ja4_accounts = old.ja4_accounts
        if (new_s.behaviour is not None and new_s.behaviour == old_s.behaviour
                and old.behaviour is not None):
            self.behaviour = old.behaviour
        if (self.templates is not None and old.templates is not None and new_s.prompts
                and old_s.prompts and new_s.prompts.templates == old_s.prompts.templates):
            self.templates = old.templates
        if self.lists and old.lists and new_s.ip is not None and old_s.ip is not None:
            old_specs = {s.name: s for s in old_s.ip.lists}
            for spec in new_s.ip.lists:
                prev = old_specs.get(spec.name)
                if prev is not None and (prev.path, prev.format) == (spec.path, spec.format) \
                        and spec.name in old.lists:
                    lf = old.lists[spec.name]
                    lf.check_interval = spec.reload_interval
                    self.lists[spec.name] = lf
            self._list_signals = tuple((f"ip.list.{n}", lf) for n, lf in self.lists.items())

    def refresh_files(self) -> None:
        """Re-read list files that changed (each at most every its reload interval). Safe
        from a worker thread: a new version replaces the old one in one assignment."""
        for lf in tuple(self.lists.values()):
            lf.check()

    def close(self) -> None:
        """Release files and caches."""
        self._steps = ()
        self.lists = {}
        self.ja4_accounts = self.behaviour = self.patterns = self.templates = None

    # -- ip -------------------------------------------------------------------------------
    def _setup_ip(self, s: Any) -> None:
        self._anonymous = s.anonymous
        self._hosting_asns = s.hosting_asns
        self._proxy_asns = s.proxy_asns
        for spec in s.lists:
            self.lists[spec.name] = ListFile(spec.path, spec.format,
                                             check_interval=spec.reload_interval,
                                             clock=self.clock, auto_check=self.auto_reload)
        self._list_signals = tuple((f"ip.list.{name}", lf) for name, lf in self.lists.items())

    def _ip(self, facts: Facts, req: Any, parsed: Any, out: dict[str, Any]) -> None:
        ip = facts.client_ip
        if ip is None:
            return
        geo = facts.geo
        if geo is not None:
            if self._anonymous:
                for flag in sorted(geo.anonymous):
                    name = ANONYMOUS_SIGNALS.get(flag)
                    if name is not None:
                        out[name] = True
                if geo.anonymizer_confidence is not None:
                    out["ip.anonymizer_confidence"] = geo.anonymizer_confidence
            asn = geo.asn
            if asn is not None:
                if asn in self._hosting_asns:
                    out["ip.hosting_asn"] = True
                if asn in self._proxy_asns:
                    out["ip.proxy_asn"] = True
        for name, lf in self._list_signals:
            if lf.get().contains(ip):
                out[name] = True

    # -- headers --------------------------------------------------------------------------
    def _setup_headers(self, s: Any) -> None:
        self._trusted = CidrSet(s.trusted_proxies)
        self._names_trusted = tuple(sorted(PROXY_HEADERS - s.ignore))
        self._names_untrusted = tuple(sorted((PROXY_HEADERS | FORWARDING_HEADERS) - s.ignore))
        self._chain = tuple(h for h in _CHAIN_HEADERS if h not in s.ignore)

    def _client_sent_chain(self, facts: Facts, header: Callable[[str], str | None]
                           ) -> list[str]:
        """Forwarding headers from a trusted peer that carry hops left of the client address:
        those hops were written by the client or by a proxy in front of it."""
        found = []
        for name in self._chain:
            value = header(name)
            if not value:
                continue
            _, stop = trusted_walk(header_hops(name, value), self._trusted)
            if stop > 0:
                found.append(name)
        return found

    def _headers(self, facts: Facts, req: Any, parsed: Any, out: dict[str, Any]) -> None:
        header = req.headers
        peer = facts.peer_ip
        trusted = peer is not None and self._trusted.contains(peer)
        names = self._names_trusted if trusted else self._names_untrusted
        present = getattr(req, "header_names", None)  # lower-cased names, when the view has them
        if present is not None:
            found = [n for n in names if n in present]
        else:
            found = [n for n in names if header(n) is not None]
        if trusted:
            found.extend(self._client_sent_chain(facts, header))
        if found:
            out["headers.proxy"] = True
            out["headers.proxy_names"] = sorted(set(found))

    # -- tls ------------------------------------------------------------------------------
    def _tls(self, facts: Facts, req: Any, parsed: Any, out: dict[str, Any]) -> None:
        ja4 = getattr(req, "tls_ja4", None)
        if not ja4:
            return
        out["tls.ja4"] = ja4
        counter = self.ja4_accounts
        assert counter is not None
        account = facts.account
        out["tls.ja4_accounts"] = counter.add(ja4, account) if account else counter.count(ja4)
        header = req.headers
        claim = sdk_runtime_claim({h: v for h in _CLAIM_HEADERS if (v := header(h))})
        if claim:
            out["tls.claimed_runtime"] = claim
            prefixes = self._sdk.get(claim)
            if prefixes is not None and not ja4.startswith(prefixes):
                out["tls.sdk_mismatch"] = True

    # -- behaviour ------------------------------------------------------------------------
    def _behaviour(self, facts: Facts, req: Any, parsed: Any, out: dict[str, Any]) -> None:
        account = facts.account
        tracker = self.behaviour
        if account is None or tracker is None:
            return
        geo = facts.geo
        asn = country = None
        if geo is not None:
            asn, country = geo.asn, geo.country
        ip = facts.client_ip
        r = tracker.update(ip, account, asn, country)
        if ip is not None:
            out["behaviour.accounts_per_ip"] = r["accounts_per_ip"]
            if ip.version == 4:
                out["behaviour.accounts_per_v4_24"] = r["accounts_per_v4_24"]
            else:
                out["behaviour.accounts_per_v6_64"] = r["accounts_per_v6_64"]
        out["behaviour.ips_per_account"] = r["ips_per_account"]
        out["behaviour.asns_per_account"] = r["asns_per_account"]
        out["behaviour.countries_per_account"] = r["countries_per_account"]
        out["behaviour.requests_per_account"] = round(r["requests_per_account"], 3)

    # -- prompts --------------------------------------------------------------------------
    def _prompts(self, facts: Facts, req: Any, parsed: Any, out: dict[str, Any]) -> None:
        if parsed is None:
            return
        system, user = parsed.system_text or "", parsed.last_user_text or ""
        if self.patterns is not None:
            names = self._pattern_signal
            for name in sorted(self.patterns.match(system, user)):
                out[names[name]] = True
        if self.templates is not None:
            floor = self._template_min_chars
            if floor and len(user if self.templates.text != "system" else system) < floor:
                return
            tid, n = self.templates.observe(system, user, facts.account)
            if tid:
                out["template.id"] = tid
                out["template.accounts"] = n
