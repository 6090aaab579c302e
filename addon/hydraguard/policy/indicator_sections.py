"""Rules-file section for the proxy / coordination indicators (`indicators:`, issue #4).

Each sub-section (ip, headers, tls, behaviour, prompts) is off when absent and on (with the
defaults below) when written; `enabled: false` keeps it written but switched off. The compiled
result is an immutable `IndicatorSettings` (module `indicator_model`) read by
`hydraguard.indicators.Indicators`; the signal names it produces are listed in that module's
docstring. This module holds the schema and the compile step; the scalar value specs (names,
AS numbers, JA4 prefixes, header names) are in `indicator_values`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..addresses import FORMATS, parse_list
from .catalogue import DEFAULT_PATTERNS
from .indicator_model import (
    BehaviourSettings,
    HeaderSettings,
    IndicatorSettings,
    IpSettings,
    ListSettings,
    PatternSettings,
    PromptSettings,
    TemplateSettings,
    TlsSettings,
)
from .indicator_values import ASN, HEADER_NAME, JA4_PREFIX, NAME, RUNTIME
from .schema import (
    INVALID,
    Bool,
    Checked,
    Errors,
    Field,
    Int,
    Invalid,
    ListOf,
    MapOf,
    Num,
    Str,
    Struct,
)

BUILTIN_PATTERNS = {name: (regex, flags) for name, regex, flags in DEFAULT_PATTERNS}
WINDOW = Num(min=1, max=30 * 86400)


def _enabled() -> Field:
    return Field(Bool(), default=True, doc="Switch this indicator off without deleting it.",
                 example=False)


LIST = Struct(
    doc="A CIDR list file; the signal ip.list.<name> is true for client IPs in it.",
    fields={
        "name": Field(NAME, required=True, doc="List name, used in the signal ip.list.<name>.",
                      example="tor_exits"),
        "path": Field(Str(), required=True,
                      doc="File path, relative to the rules file's folder.",
                      example="../lists/tor-exit-addresses.txt"),
        "format": Field(Str(choices=FORMATS), default="plain",
                        doc="plain (CIDR or IP per line, # comments), tor (bulk exit list: one "
                        "IP per line, or the exit-addresses format), aws (ip-ranges.json), "
                        "gcp (cloud.json).", example="tor"),
        "reload_interval": Field(Num(min=1, max=86400), default=60,
                                 doc="Seconds between checks of the file; a changed file is "
                                 "re-read, an invalid new version keeps the previous list.",
                                 example=300),
    },
)

IP = Struct(
    doc="IP intelligence: Anonymous-IP database flags, hosting / proxy ASN lists, CIDR lists.",
    fields={
        "enabled": _enabled(),
        "anonymous": Field(Bool(), default=True,
                           doc="Signals from the geoip anonymous database flags (ip.anonymous, "
                           "ip.anonymous_vpn, ip.hosting, ip.public_proxy, "
                           "ip.residential_proxy, ip.tor_exit, ip.anonymizer_confidence).",
                           example=True),
        "hosting_asns": Field(ListOf(ASN), default=(),
                              doc="ASNs of hosting / cloud providers: ip.hosting_asn "
                              "(needs an asn database in geoip:).", example=[64510, "AS16509"]),
        "proxy_asns": Field(ListOf(ASN), default=(),
                            doc="ASNs of proxy services: ip.proxy_asn.", example=[65551]),
        "lists": Field(ListOf(LIST), default=(), doc=LIST.doc,
                       example=[{"name": "tor_exits", "path": "../lists/tor-exits.txt",
                                 "format": "tor"}]),
    },
)

HEADERS = Struct(
    doc="Proxy headers: Via, Proxy-Connection, X-Proxy-ID, ... from any peer; forwarding "
    "headers (Forwarded, X-Forwarded-For, X-Real-IP, ...) only from untrusted peers.",
    fields={
        "enabled": _enabled(),
        "ignore": Field(ListOf(HEADER_NAME), default=(),
                        doc="Headers not to count (e.g. the Via your own CDN adds).",
                        example=["via"]),
    },
)

TLS = Struct(
    doc="JA4 fingerprint of clients that speak TLS to hydraguard (`hydraguard run --certs`).",
    fields={
        "enabled": _enabled(),
        "window": Field(WINDOW, default=3600, doc="Seconds over which tls.ja4_accounts counts "
                        "distinct accounts per fingerprint.", example=3600),
        "max_keys": Field(Int(min=1, max=10_000_000), default=10_000,
                          doc="Fingerprints tracked (least recently seen dropped).",
                          example=10_000),
        "max_accounts_per_key": Field(Int(min=1, max=1_000_000), default=1000,
                                      doc="The count saturates here. Exact up to 32 accounts, "
                                      "an estimate above (~7-9 % error, ~1.3 KB per "
                                      "fingerprint whatever the number).", example=1000),
        "sdk_fingerprints": Field(
            MapOf(ListOf(JA4_PREFIX, min_len=1, allow_scalar=True), key=RUNTIME), default={},
            doc="Per claimed runtime (from X-Stainless-Lang/-Runtime or the User-Agent: python, "
            "node, go, java, curl, ...), the JA4 values or prefixes its TLS stack produces. A "
            "request claiming a listed runtime whose JA4 matches none sets tls.sdk_mismatch; "
            "runtimes not listed are not judged.",
            example={"python": ["t13d"], "node": ["t13d1516h2_8daaf6152771"]}),
    },
)

BEHAVIOUR = Struct(
    doc="Sliding-window counts across accounts: accounts per IP, /24, IPv6 /64; IPs, ASNs, "
    "countries and requests per account. Needs an account (API key) on the request.",
    fields={
        "enabled": _enabled(),
        "window": Field(WINDOW, default=3600, doc="Seconds of the distinct-count windows.",
                        example=3600),
        "rate_window": Field(WINDOW, default=60, doc="Seconds of the request-rate window "
                             "(behaviour.requests_per_account).", example=60),
        "max_keys": Field(Int(min=1, max=10_000_000), default=1_000_000,
                          doc="Accounts, client IPs and networks tracked (each; least "
                          "recently seen dropped). About 50-100 bytes per account and 20-40 "
                          "per IP: a million of each takes ~180 MB.", example=1_000_000),
        "max_members_per_key": Field(Int(min=1, max=100_000), default=200,
                                     doc="Counts saturate here, so keep it above your "
                                     "thresholds. Exact up to 32 members, an estimate above "
                                     "(~7-9 % error); memory does not grow with it.",
                                     example=200),
    },
)


PATTERN = Struct(
    doc="A named prompt pattern; the signal prompt.<name> is true when it matches. Give "
    "exactly one of phrase, regex, builtin.",
    fields={
        "name": Field(NAME, required=True, doc="Pattern name (signal prompt.<name>).",
                      example="cot_elicitation"),
        "phrase": Field(Str(), doc="Words matched case-insensitively, any whitespace between.",
                        example="show your reasoning step by step"),
        "regex": Field(Str(), doc="Python regex, matched case-insensitively.",
                       example=r"write (?:out|down) (?:your|the) (?:reasoning|thinking)"),
        "builtin": Field(Str(choices=tuple(BUILTIN_PATTERNS)),
                         doc="A pattern shipped with hydraguard: cot_elicitation (asking the "
                         "model to write out its step-by-step reasoning for an answer).",
                         example="cot_elicitation"),
        "gate": Field(ListOf(Str(), min_len=1, allow_scalar=True),
                      doc="Only search texts containing one of these words (faster; regex "
                      "patterns only; phrases gate on their longest word).",
                      example=["reasoning", "thinking"]),
        "window": Field(Int(min=0, max=1_000_000), default=400,
                        doc="With gate: search only this many characters either side of each "
                        "gate word (0: the whole text). Keeps long prompts cheap.",
                        example=400),
        "where": Field(Str(choices=("system", "user", "both")), default="both",
                       doc="Match the system prompt, the last user turn, or both.",
                       example="user"),
    },
)

TEMPLATES = Struct(
    doc="Near-duplicate prompt templates (MinHash over 3-word shingles with banded LSH, "
    "signals/templates.py): template.id and template.accounts (distinct accounts using it in "
    "the window). What the caller writes is matched (the last user turn, numbers, quoted "
    "spans and names folded), so slot-varied prompts of one template share an id; the system "
    "prompt only qualifies a match, so users of one tool with one long system prompt and "
    "their own questions stay apart.",
    fields={
        "enabled": _enabled(),
        "text": Field(Str(choices=("system", "user", "both")), default="both",
                      doc="both: the user turn is matched, under a similar system prompt; "
                      "user: the user turn alone; system: the system prompt is matched (for "
                      "fleets that vary the system prompt and send a fixed short user turn).",
                      example="both"),
        "window": Field(WINDOW, default=3600, doc="Seconds a template and its accounts are "
                        "remembered.", example=3600),
        "min_chars": Field(Int(min=0, max=1_000_000), default=0,
                           doc="Matched texts shorter than this are not fingerprinted (0: "
                           "only min_words applies).", example=0),
        "min_words": Field(Int(min=1, max=10_000), default=8,
                           doc="Matched texts with fewer words are not fingerprinted.",
                           example=8),
        "max_chars": Field(Int(min=64, max=1_000_000), default=2048,
                           doc="Characters of a text that are hashed (its first two thirds "
                           "and last third of them); bounds the cost.", example=2048),
        "threshold": Field(Num(min=0.05, max=1.0), default=0.3,
                           doc="Estimated Jaccard similarity of the shingle sets from which "
                           "two texts are one template.", example=0.3),
        "bands": Field(Int(min=1, max=64), default=4, doc="No effect (SimHash, before the "
                       "MinHash matcher); accepted so older rules files load.", example=4),
        "max_distance": Field(Int(min=0, max=16), default=3,
                              doc="No effect (SimHash); accepted so older rules files load.",
                              example=3),
        "max_templates": Field(Int(min=1, max=10_000_000), default=10_000,
                               doc="Templates tracked (least recently seen dropped).",
                               example=10_000),
        "max_accounts_per_template": Field(Int(min=1, max=1_000_000), default=1000,
                                           doc="The count saturates here. Exact up to 32 "
                                           "accounts, an estimate above (~7-9 % error).",
                                           example=1000),
    },
)

PROMPTS = Struct(
    doc="Prompt signals of model calls: named patterns and near-duplicate templates.",
    fields={
        "enabled": _enabled(),
        "patterns": Field(ListOf(PATTERN), default=(), doc=PATTERN.doc,
                          example=[{"name": "cot_elicitation", "builtin": "cot_elicitation"}]),
        "templates": Field(TEMPLATES, doc=TEMPLATES.doc, example={"enabled": True}),
    },
)

INDICATORS = Struct(
    doc="Proxy and coordination indicators: named signals in the request facts for rules "
    "(`signal:` / `score:`) and the decision log. A sub-section is on when written.",
    fields={
        "ip": Field(IP, doc=IP.doc),
        "headers": Field(HEADERS, doc=HEADERS.doc),
        "tls": Field(TLS, doc=TLS.doc),
        "behaviour": Field(BEHAVIOUR, doc=BEHAVIOUR.doc),
        "prompts": Field(PROMPTS, doc=PROMPTS.doc),
    },
)

SECTIONS: dict[str, Field] = {
    "indicators": Field(INDICATORS, doc=INDICATORS.doc,
                        example={"headers": {}, "ip": {"hosting_asns": [64510]}}),
}


# --- compile (the compiled form is in indicator_model) ----------------------------------------


def _on(c: Checked | Invalid | None) -> bool:
    return c is not None and c is not INVALID and bool(c.get("enabled", True))


def _ip(c: Checked | Invalid | None, errors: Errors, base: Path, has_asn_db: bool
        ) -> IpSettings | None:
    if not _on(c):
        return None
    if (c["hosting_asns"] or c["proxy_asns"]) and not has_asn_db:
        errors.add(c.at("hosting_asns" if c["hosting_asns"] else "proxy_asns"),
                   "indicators.ip: hosting_asns / proxy_asns need a geoip: section with an asn "
                   "(or IPinfo location) database")
    lists: list[ListSettings] = []
    seen: set[str] = set()
    for i, item in enumerate(c["lists"]):
        where = f"indicators.ip.lists[{i}]"
        if item["name"] in seen:
            errors.add(item.at("name"), f"{where}.name: duplicate list name {item['name']!r}")
            continue
        seen.add(item["name"])
        path = item["path"]
        full = path if os.path.isabs(path) else str((base / path).resolve())
        try:
            with open(full, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as e:
            errors.add(item.at("path"), f"{where}.path: cannot read {full}: {e.strerror or e}")
            continue
        nets, bad = parse_list(text, item["format"])
        if bad:
            errors.add(item.at("path"), f"{where}.path: {full} is not a valid "
                       f"{item['format']} list: {bad[0]}"
                       + (f" ({len(bad)} problems)" if len(bad) > 1 else ""))
            continue
        if not nets:
            errors.add(item.at("path"), f"{where}.path: {full} holds no networks")
            continue
        lists.append(ListSettings(item["name"], full, item["format"],
                                  float(item["reload_interval"])))
    return IpSettings(anonymous=c["anonymous"], hosting_asns=frozenset(c["hosting_asns"]),
                      proxy_asns=frozenset(c["proxy_asns"]), lists=tuple(lists))


def _patterns(items: Sequence[Checked], errors: Errors) -> tuple[PatternSettings, ...]:
    out: list[PatternSettings] = []
    seen: set[str] = set()
    for i, p in enumerate(items):
        where = f"indicators.prompts.patterns[{i}]"
        if p["name"] in seen:
            errors.add(p.at("name"), f"{where}.name: duplicate pattern name {p['name']!r}")
            continue
        seen.add(p["name"])
        given = [k for k in ("phrase", "regex", "builtin") if p[k] is not None]
        if len(given) != 1:
            errors.add(p.where, f"{where}: give exactly one of phrase, regex, builtin"
                       + (f" (got {', '.join(given)})" if given else ""))
            continue
        kind = given[0]
        flags = ["user"] if p["where"] == "user" else ["system"] if p["where"] == "system" \
            else []
        if p["gate"] is not None:
            if kind != "regex":
                errors.add(p.at("gate"), f"{where}.gate: only for regex patterns")
                continue
            gates = [g.lower() for g in p["gate"]]
            if any("|" in g or " " in g or "," in g or not g for g in gates):
                errors.add(p.at("gate"), f"{where}.gate: gate words must be single words")
                continue
            flags.append("gate=" + "|".join(gates))
            if p["window"]:
                flags.append(f"window={p['window']}")
        if kind == "phrase":
            if not p["phrase"].split():
                errors.add(p.at("phrase"), f"{where}.phrase: must contain a word")
                continue
            out.append(PatternSettings(p["name"], p["phrase"], " ".join(["phrase", *flags])))
        elif kind == "regex":
            # matched against the lower-cased text; (?i) (slower) only when the regex has
            # upper-case letters outside escapes, so that they still match
            regex = p["regex"]
            if re.search(r"[A-Z]", re.sub(r"\\.", "", regex)):
                regex = "(?i)" + regex
            try:
                re.compile(p["regex"], re.IGNORECASE)
                re.compile(regex)
            except re.error as e:
                errors.add(p.at("regex"), f"{where}.regex: invalid regular expression: {e}")
                continue
            out.append(PatternSettings(p["name"], regex, " ".join(["regex", *flags])))
        else:
            regex, base_flags = BUILTIN_PATTERNS[p["builtin"]]
            out.append(PatternSettings(p["name"], regex, " ".join([base_flags, *flags])))
    return tuple(out)


def _templates(c: Checked | Invalid | None, errors: Errors) -> TemplateSettings | None:
    if not _on(c):
        return None
    return TemplateSettings(
        text=c["text"], window=float(c["window"]), min_chars=c["min_chars"],
        max_chars=c["max_chars"], bands=c["bands"], max_distance=c["max_distance"],
        threshold=float(c["threshold"]), min_words=c["min_words"],
        max_templates=c["max_templates"],
        max_accounts_per_template=c["max_accounts_per_template"])


def compile_indicators(checked: dict[str, Any], errors: Errors, base: Path
                       ) -> IndicatorSettings | None:
    """The compiled indicator settings (None: indicators off). List files are checked now
    (relative paths from `base`, the rules file's folder); problems go to `errors`."""
    c = checked.get("indicators")
    if c is None or c is INVALID:
        return None
    geoip = checked.get("geoip") or {}
    has_asn_db = bool(geoip.get("asn") or geoip.get("location"))
    settings = checked.get("settings") or {}
    ip = _ip(c["ip"], errors, base, has_asn_db)
    headers = None
    if _on(c["headers"]):
        headers = HeaderSettings(trusted_proxies=tuple(settings.get("trusted_proxies") or ()),
                                 ignore=frozenset(c["headers"]["ignore"]))
    tls = None
    if _on(c["tls"]):
        t = c["tls"]
        tls = TlsSettings(window=float(t["window"]), max_keys=t["max_keys"],
                          max_accounts_per_key=t["max_accounts_per_key"],
                          sdk_fingerprints=tuple((k, tuple(v))
                                                 for k, v in t["sdk_fingerprints"].items()))
    behaviour = None
    if _on(c["behaviour"]):
        b = c["behaviour"]
        behaviour = BehaviourSettings(window=float(b["window"]),
                                      rate_window=float(b["rate_window"]),
                                      max_keys=b["max_keys"],
                                      max_members_per_key=b["max_members_per_key"])
    prompts = None
    if _on(c["prompts"]):
        p = c["prompts"]
        prompts = PromptSettings(patterns=_patterns(p["patterns"], errors),
                                 templates=_templates(p["templates"], errors))
        if not prompts.patterns and prompts.templates is None:
            prompts = None
    return IndicatorSettings(ip=ip, headers=headers, tls=tls, behaviour=behaviour,
                             prompts=prompts)
