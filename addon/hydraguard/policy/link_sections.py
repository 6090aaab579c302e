"""The `link:` section of a cluster definition (hydra linking): schema and compile step.

Accounts are linked when their combined evidence crosses `threshold`: every value two
accounts share (an exit IP, a /24, an ASN, a TLS fingerprint + User-Agent, a prompt template)
adds its kind's weight to their pair score, more when both came through a flagged network,
less when the value is common. The runtime is `hydraguard.clusters` (linker.py); the
compiled form is `LinkConfig` / `LinkRule` in `budget_model`.
"""

from __future__ import annotations

from .budget_model import (
    EVIDENCE_DEFAULTS,
    EVIDENCE_KINDS,
    FLAGGED_SIGNALS,
    MIN_ACCOUNTS,
    LinkConfig,
    LinkRule,
)
from .schema import Checked, Errors, Field, Int, ListOf, Num, Str, Struct

__all__ = ["EVIDENCE", "LINK", "compile_link"]

_WEAK = ("prefix", "asn")  # may never link on their own, not even two values of them


def _defaults(i: int) -> str:
    return ", ".join(f"{k} {v[i]:g}" for k, v in EVIDENCE_DEFAULTS.items())


EVIDENCE = Struct(
    doc="One kind of shared evidence and what it is worth.",
    fields={
        "kind": Field(
            Str(choices=EVIDENCE_KINDS), required=True,
            doc="ip: the same exit (client IP; an IPv6 address counts as its "
            "ipv6_exit_prefix network, so rotation inside it is one exit); prefix: the same "
            "/24 (IPv4) or /48 (IPv6; /32 when ipv6_exit_prefix is 48 or shorter); asn: the "
            "same network operator (needs geoip.asn); tls_ua: the same TLS fingerprint (JA4) "
            "and User-Agent; template: the same near-duplicate prompt template (signal "
            "template.id).", example="ip"),
        "min_accounts": Field(
            Int(min=2, max=1_000_000), default=MIN_ACCOUNTS,
            doc="A value counts only once this many distinct accounts were seen with it within "
            "the window (below: a household or a SaaS with two keys).", example=3),
        "max_accounts": Field(
            Int(min=2, max=1_000_000), default=None,
            doc="...and no more than this many: above, the value is too common to say anything "
            "(carrier-grade NAT, a popular SDK). Between a tenth of it and it, the weight falls "
            "with the rarity min(1, log10(max_accounts / accounts)). Default by kind: "
            + _defaults(2) + ".", example=1000),
        "weight": Field(
            Num(min=0, max=100), default=None,
            doc="What one shared value adds to a pair score (threshold 1 links). Must stay "
            "below the threshold: one shared value never links. Default by kind: "
            + _defaults(0) + ".", example=0.35),
        "flagged_weight": Field(
            Num(min=0, max=100), default=None,
            doc="The weight when both accounts were seen with the value through a flagged "
            "network (link.flagged_signals); at least weight, below the threshold. Default "
            "by kind: " + _defaults(1) + ".", example=0.7),
    },
)

LINK = Struct(
    doc="Hydra linking: merge accounts that act as one operator into one cluster.",
    fields={
        "window": Field(
            Num(min=1, max=30 * 86400), default=3600,
            doc="Seconds evidence is remembered. A link lasts at least one window and at most "
            "two after the evidence that made it.", example=3600),
        "max_accounts_tracked": Field(
            Int(min=10, max=10_000_000), default=100_000,
            doc="Accounts remembered by the linker (least recently seen dropped first).",
            example=100000),
        "threshold": Field(
            Num(min=0.01, max=1000), default=1.0,
            doc="Two accounts are linked when their pair score reaches this: the sum of what "
            "they share (see the evidence weights). Linking is transitive: a cluster is every "
            "account reachable through such pairs.", example=1.0),
        "multi_exit": Field(
            Num(min=0, max=86400), default=600,
            doc="Seconds: a second, different value of one group (the network: exit, /24, "
            "ASN; a TLS stack; a template) adds to a pair only when both accounts used it "
            "within this time of each other and of the pair's previous credit (an operator "
            "rotating accounts through exits); otherwise the group counts its strongest "
            "value. At most two values of a group count.", example=600),
        "candidates": Field(
            Int(min=1, max=64), default=8,
            doc="An account new to a value is scored with that value's most recent accounts "
            "(this many) and with its own earlier partners: bounds the work per request.",
            example=8),
        "max_partners": Field(
            Int(min=1, max=256), default=16,
            doc="Partners (accounts it shares evidence with) remembered per account.",
            example=16),
        "max_pairs": Field(
            Int(min=100, max=100_000_000), default=200_000,
            doc="Pair scores kept (memory: least recently used dropped; Redis: no new pair "
            "once an epoch holds this many).", example=200000),
        "max_why": Field(
            Int(min=100, max=10_000_000), default=50_000,
            doc="Why-records (the pair that linked an account: kinds, score, time) kept, for "
            "linked accounts only (decision log field `link`).", example=50000),
        "ipv6_exit_prefix": Field(
            Int(min=32, max=128), default=64,
            doc="An IPv6 client counts as the exit of this prefix length (proxies rotate the "
            "address inside a /64 or a /48).", example=64),
        "flagged_signals": Field(
            ListOf(Str(), min_len=0, allow_scalar=True), default=None,
            doc="Signals that mark a request's network as flagged (a trailing * matches a "
            "prefix). Default: " + ", ".join(FLAGGED_SIGNALS) + ".",
            example=["ip.residential_proxy", "ip.hosting", "ip.list.*"]),
        "evidence": Field(
            ListOf(EVIDENCE, min_len=1), required=True,
            doc="Kinds of evidence that count, each with its weights and limits.",
            example=[{"kind": "ip"}, {"kind": "prefix"},
                     {"kind": "template", "min_accounts": 3, "max_accounts": 10000}]),
    },
)


def compile_link(lk: Checked, path: str, errors: Errors) -> LinkConfig | None:
    """The compiled `link:` (None after an error, which is recorded with its position)."""
    threshold = float(lk["threshold"])
    rules: list[LinkRule] = []
    kinds: set[str] = set()
    ok = True
    for j, ev in enumerate(lk["evidence"]):
        epath = f"{path}.link.evidence[{j}]"
        kind = ev["kind"]
        if kind in kinds:
            errors.add(ev.where, f"{epath}: evidence kind {kind!r} listed twice")
            ok = False
            continue
        kinds.add(kind)
        w0, fw0, mx0 = EVIDENCE_DEFAULTS[kind]
        mn = ev["min_accounts"]
        mx = ev["max_accounts"] if ev["max_accounts"] is not None else max(mx0, mn)
        if mx < mn:
            errors.add(ev.at("max_accounts"), f"{epath}.max_accounts: {mx} is below "
                       f"min_accounts {mn}")
            ok = False
            continue
        w = float(ev["weight"]) if ev["weight"] is not None else w0
        fw = float(ev["flagged_weight"]) if ev["flagged_weight"] is not None else max(fw0, w)
        if fw < w:
            errors.add(ev.at("flagged_weight"), f"{epath}.flagged_weight: {fw:g} is below "
                       f"weight {w:g} (a flagged network never counts less)")
            ok = False
            continue
        if fw >= threshold:
            key = "flagged_weight" if ev["flagged_weight"] is not None else "weight"
            errors.add(ev.at(key), f"{epath}.{key}: {fw:g} reaches the threshold "
                       f"{threshold:g}: one shared value would link on its own (keep weights "
                       "below the threshold; combined evidence links)")
            ok = False
            continue
        if kind in _WEAK and 2 * fw >= threshold:
            errors.add(ev.at("flagged_weight" if ev["flagged_weight"] is not None
                             else "weight"),
                       f"{epath}: {kind} is weak evidence: twice its flagged weight "
                       f"({2 * fw:g}) must stay below the threshold {threshold:g}, so a shared "
                       f"{'/24' if kind == 'prefix' else 'ASN'} never links on its own")
            ok = False
            continue
        rules.append(LinkRule(kind, mn, mx, w, fw))
    if not ok:
        return None
    flagged = lk["flagged_signals"]
    return LinkConfig(
        window_s=float(lk["window"]), max_nodes=lk["max_accounts_tracked"], rules=tuple(rules),
        threshold=threshold, multi_exit_s=float(lk["multi_exit"]),
        candidates=lk["candidates"], max_partners=lk["max_partners"],
        max_pairs=lk["max_pairs"], max_why=lk["max_why"],
        ipv6_exit_prefix=lk["ipv6_exit_prefix"],
        flagged_signals=tuple(flagged) if flagged is not None else FLAGGED_SIGNALS)
