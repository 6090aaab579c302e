"""`clusters:`, `budgets:`, `state:` sections: compiled values, exact errors with positions."""

from __future__ import annotations

import pytest

from hydraguard.policy import PolicyError, load_policy, parse_policy
from hydraguard.policy.budget_model import LinkRule, WindowSpec
from hydraguard.policy.budget_sections import SECTIONS
from hydraguard.policy.schema import Struct


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "r.yaml")
    return [str(i) for i in e.value.issues]


GOOD = """
state: {backend: redis, redis_url: "redis://127.0.0.1:6390/2", timeout_ms: 20, on_error: closed,
        prefix: hgx, retry_after: 3}
clusters:
  - id: hosting
    when: {signal: ip.hosting}
    key: [asn]
  - id: per-account
    key: [cluster, api]
    link:
      window: 600
      evidence: [{kind: ip, min_accounts: 4, max_accounts: 40}, {kind: template}]
budgets:
  - id: b1
    clusters: per-account
    windows: [{per: minute, tokens: 1000}, {seconds: 90, tokens: 5000}, {per: day, tokens: 9,
               name: daily}]
    count: output
    weights: {cache_read: 0.1}
    model_multipliers: {"claude-opus-*": 5, "*": 2}
    max_output_reserve: 300
    on_exceed: cap_max_tokens
    cap_to: 64
    shadow: true
  - id: b2
    windows: [{per: hour, tokens: 7}]
"""


def test_compiled_values():
    b = parse_policy(GOOD, "r.yaml").budgets
    s = b.state
    assert (s.backend, s.redis_url, s.timeout_ms, s.on_error, s.prefix, s.retry_after_s) == (
        "redis", "redis://127.0.0.1:6390/2", 20.0, "closed", "hgx", 3.0)
    assert [c.id for c in b.clusters] == ["hosting", "per-account"]
    assert b.clusters[0].key == ("asn",) and b.clusters[0].link is None
    link = b.clusters[1].link
    # old-style evidence (kind, min/max accounts) still loads: weights come from the kind
    assert link.window_s == 600.0 and link.rules == (
        LinkRule("ip", 4, 40, 0.35, 0.7), LinkRule("template", 3, 10000, 0.35, 0.7))
    assert (link.threshold, link.multi_exit_s, link.candidates, link.ipv6_exit_prefix) == (
        1.0, 600.0, 8, 64)
    assert "ip.residential_proxy" in link.flagged_signals and "ip.list.*" in link.flagged_signals
    b1, b2 = b.budgets
    assert b1.windows == (WindowSpec("minute", 1000, 60.0), WindowSpec("90s", 5000, 90.0),
                          WindowSpec("daily", 9, 86400.0))
    assert b1.clusters == frozenset({"per-account"}) and b2.clusters is None
    assert (b1.count, b1.w_input, b1.w_output, b1.w_cache_read, b1.w_cache_creation) == (
        "output", 1.0, 1.0, 0.1, 1.0)
    assert b1.multiplier("claude-opus-4") == 5.0 and b1.multiplier("gpt-4o") == 2.0
    assert b2.multiplier("x") == 1.0 and b2.multiplier(None) == 1.0
    assert (b1.max_output_reserve, b1.default_output, b1.on_exceed, b1.cap_to, b1.shadow) == (
        300, 300, "cap_max_tokens", 64, True)
    assert (b2.count, b2.max_output_reserve, b2.on_exceed, b2.shadow) == (
        "total", 4096, "throttle", False)


def test_no_sections_means_no_budgets():
    assert parse_policy("rules: []\n", "r.yaml").budgets is None


def test_shipped_rules_probation_then_cluster_budgets():
    b = load_policy("rules/default.yaml").budgets
    assert b.state.backend == "memory"
    assert [c.id for c in b.clusters] == ["account"]
    assert [(x.id, x.probation is not None) for x in b.budgets] == [
        ("probation-proxy-networks", True), ("probation-hosting", True),
        ("cluster-tokens", False)]
    assert (b.budgets[0].probation.key, b.budgets[1].probation.key) == (("network",), ("asn",))
    for pool in b.budgets[:2]:  # one hourly window (no minute pacing); the output asked for
        assert pool.windows == (WindowSpec("hour", 13_000, 3600.0),)
        assert (pool.max_output_reserve, pool.probation.min_requests,
                pool.probation.min_tokens, pool.probation.min_age_s) == (8192, 2, 1500, 0.0)
    assert b.budgets[2].windows[0] == WindowSpec("minute", 200_000, 60.0)


def test_schema_errors_with_positions_and_hints():
    text = (
        "state: {backend: redsi, timeout_ms: 0}\n"
        "clusters:\n"
        "  - id: a\n"
        "    key: [acount]\n"
        "    lnk: {}\n"
        "budgets:\n"
        "  - id: x\n"
        "    windows: [{per: mniute, tokens: 10}]\n"
        "    count: totl\n"
        "    weights: {output: -1}\n"
    )
    assert errors_of(text) == [
        "r.yaml:1:18: state.backend: 'redsi' is not one of: memory, redis "
        "(did you mean \"redis\"?)",
        "r.yaml:1:37: state.timeout_ms: 0 is below the minimum 1",
        "r.yaml:4:11: clusters[0].key[0]: 'acount' is not one of: account, ip, prefix, asn, "
        "country, ja4, api, model, cluster (did you mean \"account\"?)",
        "r.yaml:5:5: clusters[0]: unknown key 'lnk' (did you mean \"link\"?)",
        "r.yaml:8:21: budgets[0].windows[0].per: 'mniute' is not one of: second, minute, "
        "hour, day, week (did you mean \"minute\"?)",
        "r.yaml:9:12: budgets[0].count: 'totl' is not one of: input, output, total "
        "(did you mean \"total\"?)",
        "r.yaml:10:23: budgets[0].weights.output: -1 is below the minimum 0",
    ]


def test_cross_reference_errors():
    text = (
        "clusters:\n"
        "  - id: per-account\n"
        "    key: [account]\n"
        "  - id: b\n"
        "    key: [cluster]\n"
        "  - id: per-account\n"
        "    key: [ip]\n"
        "  - id: c/d\n"
        "    key: ip\n"
        "    link: {evidence: [{kind: ip, min_accounts: 9, max_accounts: 3}, {kind: ip}]}\n"
        "budgets:\n"
        "  - id: x\n"
        "    clusters: [per-acount, b]\n"
        "    windows: [{per: minute, tokens: 10}, {per: minute, tokens: 2}, "
        "{per: hour, seconds: 5, tokens: 1}]\n"
        "    on_exceed: cap_max_tokens\n"
        "  - id: y\n"
        "    windows: [{tokens: 10}]\n"
        "    cap_to: 5\n"
        "  - id: x\n"
        "    windows: [{per: minute, tokens: 10}]\n"
    )
    assert errors_of(text) == [
        "r.yaml:5:5: clusters[1].key: attribute 'cluster' needs a `link:` section "
        "(it is the hydra-linked account cluster)",
        "r.yaml:6:5: clusters: duplicate cluster id 'per-account' (first at line 2)",
        "r.yaml:8:5: clusters[3].id: 'c/d' may only contain letters, digits, '.', '_' and '-'",
        "r.yaml:10:5: clusters[3].link: has no effect unless key includes 'cluster' "
        "(the linked account cluster), e.g. key: [cluster]",
        "r.yaml:10:51: clusters[3].link.evidence[0].max_accounts: 3 is below min_accounts 9",
        "r.yaml:10:69: clusters[3].link.evidence[1]: evidence kind 'ip' listed twice",
        "r.yaml:13:5: budgets[0].clusters: unknown cluster 'per-acount' "
        "(did you mean \"per-account\"?) (known: per-account, b, c/d)",
        "r.yaml:14:42: budgets[0].windows[1]: duplicate window name 'minute' "
        "(first at line 14); set `name`",
        "r.yaml:14:68: budgets[0].windows[2]: give exactly one of per or seconds",
        "r.yaml:15:5: budgets[0].on_exceed: cap_max_tokens needs cap_to",
        "r.yaml:17:15: budgets[1].windows[0]: give exactly one of per or seconds",
        "r.yaml:18:5: budgets[1].cap_to: only used with on_exceed: cap_max_tokens",
        "r.yaml:19:5: budgets: duplicate budget id 'x' (first at line 12)",
    ]


LINK_KEYS = """
clusters:
  - id: a
    key: [cluster]
    link:
      window: 900
      threshold: 2
      multi_exit: 120
      candidates: 4
      max_partners: 6
      max_pairs: 1000
      max_why: 500
      ipv6_exit_prefix: 48
      flagged_signals: [ip.hosting, "ip.list.*"]
      evidence:
        - {kind: ip, weight: 0.5, flagged_weight: 1.5, min_accounts: 2, max_accounts: 90}
        - {kind: asn}
        - {kind: prefix, flagged_weight: 0.9}
"""


def test_link_weights_and_settings():
    link = parse_policy(LINK_KEYS, "r.yaml").budgets.clusters[0].link
    assert link.rules == (LinkRule("ip", 2, 90, 0.5, 1.5), LinkRule("asn", 3, 5000, 0.05, 0.3),
                          LinkRule("prefix", 3, 2000, 0.15, 0.9))
    assert (link.window_s, link.threshold, link.multi_exit_s, link.candidates,
            link.max_partners, link.max_pairs, link.max_why, link.ipv6_exit_prefix,
            link.flagged_signals) == (900.0, 2.0, 120.0, 4, 6, 1000, 500, 48,
                                      ("ip.hosting", "ip.list.*"))


def test_link_weight_errors():
    head = "clusters:\n  - id: a\n    key: [cluster]\n    link:\n      evidence:\n"
    assert errors_of(head + (
        "        - {kind: tls_ua, weight: -1, min_accounts: 1}\n"
        "        - {kind: ipp}\n")) == [
        "r.yaml:6:34: clusters[0].link.evidence[0].weight: -1 is below the minimum 0",
        "r.yaml:6:52: clusters[0].link.evidence[0].min_accounts: 1 is below the minimum 2",
        "r.yaml:7:18: clusters[0].link.evidence[1].kind: 'ipp' is not one of: ip, prefix, "
        "asn, tls_ua, template (did you mean \"ip\"?)",
    ]
    assert errors_of(head + (
        "        - {kind: ip, flagged_weight: 1.0}\n"
        "        - {kind: template, weight: 0.5, flagged_weight: 0.4}\n"
        "        - {kind: prefix, flagged_weight: 0.5}\n"
        "        - {kind: asn, weight: 1.2}\n")) == [
        "r.yaml:6:22: clusters[0].link.evidence[0].flagged_weight: 1 reaches the threshold 1: "
        "one shared value would link on its own (keep weights below the threshold; combined "
        "evidence links)",
        "r.yaml:7:41: clusters[0].link.evidence[1].flagged_weight: 0.4 is below weight 0.5 "
        "(a flagged network never counts less)",
        "r.yaml:8:26: clusters[0].link.evidence[2]: prefix is weak evidence: twice its flagged "
        "weight (1) must stay below the threshold 1, so a shared /24 never links on its own",
        "r.yaml:9:23: clusters[0].link.evidence[3].weight: 1.2 reaches the threshold 1: one "
        "shared value would link on its own (keep weights below the threshold; combined "
        "evidence links)",
    ]
    # a higher threshold makes room for the same weights
    ok = head.replace("    link:\n", "    link:\n      threshold: 2.5\n") + (
        "        - {kind: ip, flagged_weight: 1.0}\n"
        "        - {kind: prefix, flagged_weight: 1.0}\n")
    assert parse_policy(ok, "r.yaml").budgets.clusters[0].link.threshold == 2.5


def test_budget_without_clusters_section():
    assert errors_of("budgets:\n  - id: x\n    windows: [{per: day, tokens: 1}]\n") == [
        "r.yaml:2:5: budgets[0]: no cluster definitions: add a `clusters:` section saying "
        "which callers share a budget"]


def _fields(spec, path=""):
    for name, f in spec.fields.items():
        yield f"{path}{name}", f
        inner = getattr(f.spec, "item", f.spec)
        if isinstance(inner, Struct):
            yield from _fields(inner, f"{path}{name}.")


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_field_has_doc_and_example(section):
    top = SECTIONS[section]
    assert top.doc and top.example is not None
    spec = getattr(top.spec, "item", top.spec)
    for path, f in _fields(spec):
        assert f.doc, f"{section}.{path} has no doc"
        if path.split(".")[-1] != "description":
            assert f.example is not None, f"{section}.{path} has no example"
