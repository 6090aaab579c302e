"""Warnings about rules that load but cannot work as written (`hydraguard check`; with
`--strict` they fail the check).

- A condition that tests a signal no configured indicator sets (a typo, or an indicator
  section that is switched off) can never match; it is reported with its position and the
  closest known name.
- Hydra-link evidence that nothing produces never links anyone: kind `template` without the
  template indicator (`indicators.prompts.templates`: nothing computes `template.id`), kind
  `tls_ua` without `indicators.tls` (nothing computes `tls.ja4`), kind `asn` without a
  `geoip.asn` database. A `link.flagged_signals` name that nothing sets never flags a
  network (typo: closest known name), and when none can be set every shared value counts at
  its unflagged weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..policy import Policy
from ..policy.conditions import All, Any_, Not, Score, SignalTest
from ..policy.schema import did_you_mean
from ..signals.collect import possible_signals


def _signal_names(cond: Any) -> Iterator[str]:
    """Every signal name a compiled condition reads."""
    if isinstance(cond, SignalTest):
        yield cond.name
    elif isinstance(cond, Score):
        for name, _weight in cond.weights:
            yield name
    elif isinstance(cond, All | Any_):
        for part in cond.parts:
            yield from _signal_names(part)
    elif isinstance(cond, Not):
        yield from _signal_names(cond.part)


def _conditions(policy: Policy) -> Iterator[tuple[str, str, Any, Any]]:
    """(kind, id, where, condition) of every condition in the rules."""
    for r in policy.rules:
        for cond in (r.when, r.exempt):
            if cond is not None:
                yield "rule", r.id, r.where, cond
    b = policy.budgets
    if b is not None:
        for c in b.clusters:
            if c.when is not None:
                yield "cluster", c.id, c.where, c.when
        for d in b.budgets:
            if d.when is not None:
                yield "budget", d.id, d.where, d.when


def lint_warnings(policy: Policy) -> list[str]:
    """Every warning, in file order of each kind."""
    return signal_warnings(policy) + evidence_warnings(policy)


def evidence_warnings(policy: Policy) -> list[str]:
    """One line per link evidence that nothing under these rules can produce, and per
    flagged-network signal that nothing sets."""
    known = possible_signals(policy.indicators)
    needs = {"template": ("template.id", "indicators.prompts.templates"),
             "tls_ua": ("tls.ja4", "indicators.tls")}
    has_asn = any(role == "asn" for role, _ in (policy.geoip.paths if policy.geoip else ()))
    out = []
    for c in policy.sections.get("clusters") or ():
        link = c["link"]
        if not link:
            continue
        for ev in link["evidence"]:
            need = needs.get(ev["kind"])
            if need is not None and need[0] not in known:
                out.append(f"{ev.where}: warning: cluster {c['id']!r} links on evidence "
                           f"{ev['kind']!r}, but no {need[1]} indicator is configured: "
                           f"{need[0]} is never set, so this evidence links nobody")
            if ev["kind"] == "asn" and not has_asn:
                out.append(f"{ev.where}: warning: cluster {c['id']!r} links on evidence "
                           "'asn', but no geoip.asn database is configured: the ASN is "
                           "never known, so this evidence links nobody")
        out += _flag_warnings(c, link, known)
    return out


def _flag_warnings(c: Any, link: Any, known: frozenset[str]) -> list[str]:
    from ..policy.budget_model import FLAGGED_SIGNALS

    names = link["flagged_signals"]
    where = link.at("flagged_signals")
    names = list(FLAGGED_SIGNALS) if names is None else names
    out, any_set = [], False
    for name in names:
        glob = name.endswith("*")
        hit = any(k.startswith(name[:-1]) for k in known) if glob else name in known
        any_set |= hit
        if not hit and link["flagged_signals"] is not None and not glob:
            out.append(f"{where}: warning: cluster {c['id']!r}: flagged signal {name!r} is "
                       f"never set under these rules{did_you_mean(name, sorted(known))}")
    if not any_set and names:
        out.append(f"{where}: warning: cluster {c['id']!r}: none of the flagged-network "
                   "signals can be set (configure indicators.ip): every shared value counts "
                   "at its unflagged weight")
    return out


def signal_warnings(policy: Policy) -> list[str]:
    """One line per condition that tests a signal nothing sets under these rules."""
    known = possible_signals(policy.indicators)
    choices = sorted(known)
    out = []
    for kind, ident, where, cond in _conditions(policy):
        for name in sorted(set(_signal_names(cond)) - known):
            out.append(f"{where or '<rules>'}: warning: {kind} {ident!r} tests signal {name!r}, "
                       f"which nothing sets with these rules{did_you_mean(name, choices)}")
    return out
