"""Rules file(s) -> validated `Policy`, or `PolicyError` with every problem at file:line:col."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .budget_sections import SECTIONS as BUDGET_SECTIONS
from .budget_sections import compile_budgets
from .conditions import ConditionSpec
from .indicator_sections import SECTIONS as INDICATOR_SECTIONS
from .indicator_sections import compile_indicators
from .model import ACTIONS, DENY_KINDS, GeoSettings, LogSettings, Policy, Rule, Settings
from .regions import GEOIP, REGION, compile_region
from .schema import (
    INVALID,
    Bool,
    Errors,
    Field,
    Int,
    ListOf,
    Network,
    Num,
    PolicyIssue,
    Str,
    Struct,
)
from .yamlpos import Where, YamlError, load_located

SETTINGS = Struct(
    doc="How the proxy finds the caller and treats odd requests.",
    fields={
        "trusted_proxies": Field(
            ListOf(Network()), default=(),
            doc="CIDRs of proxies/load balancers whose forwarding headers are believed. "
            "The header chain is walked right to left, skipping trusted hops.",
            example=["10.0.0.0/8", "127.0.0.1/32"],
        ),
        "client_ip_headers": Field(
            ListOf(Str(choices=("forwarded", "x-forwarded-for")), min_len=1),
            default=("forwarded", "x-forwarded-for"),
            doc="Forwarding headers consulted (first present wins), only from trusted peers.",
        ),
        "account_secret_env": Field(
            Str(), default="HYDRAGUARD_ACCOUNT_SECRET",
            doc="Environment variable holding the HMAC secret that turns API keys into "
            "account hashes. Every replica must share it.",
        ),
        "non_model_paths": Field(
            Str(choices=("pass", "deny")), default="pass",
            doc="What to do with requests that are not model calls (logged either way).",
        ),
        "max_body_bytes": Field(
            Int(min=1024, max=1 << 30), default=16 * 1024 * 1024,
            doc="Largest request body accepted (after decompression); larger gets 413.",
        ),
        "bad_body": Field(
            Str(choices=("deny", "pass")), default="deny",
            doc="Model call whose body is not valid JSON: answer 400 (deny) or forward (pass).",
        ),
    },
)

LOG = Struct(
    doc="The decision log: one JSON line per request.",
    fields={
        "path": Field(Str(), default="-", doc="File to append to, or '-' for stdout."),
        "max_bytes": Field(Int(min=0), default=100 * 1024 * 1024,
                           doc="Rotate the file at this size (0: never)."),
        "backups": Field(Int(min=0, max=100), default=5, doc="Rotated files kept."),
        "truncate_ip": Field(Bool(), default=False,
                             doc="Log client IPs truncated to /24 (IPv4) and /48 (IPv6)."),
    },
)

RULE = Struct(
    doc="An access rule. Rules are evaluated in order; the first enforcing match decides.",
    fields={
        "id": Field(Str(), required=True, doc="Unique rule id (appears in the decision log)."),
        "description": Field(Str(non_empty=False), default="", doc="Free text."),
        "when": Field(ConditionSpec(), doc="Condition; a rule without one always matches."),
        "action": Field(Str(choices=ACTIONS), required=True,
                        doc="allow (stop evaluating, forward), deny (403) or throttle (429)."),
        "shadow": Field(Bool(), default=False,
                        doc="Decide and log, but let the request through."),
        "reason": Field(Str(non_empty=False), default="",
                        doc="Message returned to the client and logged."),
        "deny_as": Field(Str(choices=DENY_KINDS),
                         doc="Error flavour of a deny: permission, or region "
                         "(OpenAI unsupported_country_region_territory). Default: region "
                         "for rules with `region`, else permission."),
        "retry_after": Field(Num(min=1, max=86400), default=60,
                             doc="Seconds in retry-after for a throttle rule."),
        "region": Field(REGION, doc=REGION.doc),
        "exempt": Field(ConditionSpec(), doc="Condition under which this rule is skipped "
                        "(e.g. {account: [...]} or {client_ip: [...]})."),
    },
)

ROOT = Struct(
    doc="A hydraguard rules file.",
    fields={
        "version": Field(Int(min=1, max=1), default=1, doc="Rules format version (1)."),
        "settings": Field(SETTINGS, default=None, doc=SETTINGS.doc),
        "log": Field(LOG, default=None, doc=LOG.doc),
        "geoip": Field(GEOIP, doc=GEOIP.doc),
        **INDICATOR_SECTIONS,
        **BUDGET_SECTIONS,
        "rules": Field(ListOf(RULE), default=(), doc=RULE.doc),
    },
)


class PolicyError(Exception):
    """The rules are invalid; `issues` holds every problem, sorted by place."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = sorted(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def _settings(c: dict[str, Any] | None) -> Settings:
    if c is None:
        return Settings()
    return Settings(
        trusted_proxies=tuple(c["trusted_proxies"]),
        client_ip_headers=tuple(c["client_ip_headers"]),
        account_secret_env=c["account_secret_env"],
        non_model_paths=c["non_model_paths"],
        max_body_bytes=c["max_body_bytes"],
        bad_body=c["bad_body"],
    )


def _log(c: dict[str, Any] | None) -> LogSettings:
    if c is None:
        return LogSettings()
    return LogSettings(path=c["path"], max_bytes=c["max_bytes"], backups=c["backups"],
                       truncate_ip=c["truncate_ip"])


def _rules(items: Any, errors: Errors) -> tuple[Rule, ...]:
    out: list[Rule] = []
    seen: dict[str, Where] = {}
    for c in items or ():
        if c["id"] in seen:
            errors.add(c.at("id"), f"rules: duplicate rule id {c['id']!r} "
                       f"(first at line {seen[c['id']].line})")
            continue
        seen[c["id"]] = c.at("id")
        out.append(Rule(
            id=c["id"], action=c["action"], when=c["when"], shadow=c["shadow"],
            reason=c["reason"],
            deny_as=c["deny_as"] or ("region" if c["region"] else "permission"),
            retry_after_s=float(c["retry_after"]),
            description=c["description"], where=c.where,
            region=compile_region(c["region"]) if c["region"] else None,
            exempt=c["exempt"],
        ))
    return tuple(out)


def _geoip(c: dict[str, Any] | None, base: Path) -> GeoSettings | None:
    if c is None:
        return None
    paths = tuple((role, str((base / c[role]).resolve()) if not os.path.isabs(c[role])
                   else c[role]) for role in ("location", "asn", "anonymous") if c.get(role))
    return GeoSettings(paths=paths, optional=c["optional"],
                       reload_interval=float(c["reload_interval"]), cache_size=c["cache_size"])


def parse_policy(text: str, filename: str = "<rules>") -> Policy:
    """Validate one rules document."""
    errors = Errors()
    try:
        data = load_located(text, filename)
    except YamlError as e:
        raise PolicyError([PolicyIssue(e.where, e.message)]) from None
    checked = ROOT.check(data, Where(filename, 1, 1), "", errors)
    if checked is INVALID or errors:
        raise PolicyError(errors or [PolicyIssue(Where(filename, 1, 1), "invalid rules")])
    rules = _rules(checked["rules"], errors)
    base = Path(filename).resolve().parent
    indicators = compile_indicators(checked, errors, base)
    budgets = compile_budgets(checked, errors)
    if errors:
        raise PolicyError(errors)
    return Policy(
        settings=_settings(checked["settings"]),
        log=_log(checked["log"]),
        rules=rules,
        geoip=_geoip(checked["geoip"], base),
        indicators=indicators,
        budgets=budgets,
        sources=(filename,),
        sections=dict(checked),
    )


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a rules file. Raises `PolicyError` (also for unreadable files)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError([PolicyIssue(Where(str(p), 1, 1), f"cannot read rules file: {e}")]) \
            from None
    return parse_policy(text, str(p))
