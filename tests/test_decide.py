"""The pure decision core: exact decisions for rules, shadow mode and precedence."""

import ipaddress

from hydraguard.decide import Decision, decide
from hydraguard.facts import Facts
from hydraguard.policy import parse_policy

RULES = """
rules:
  - id: vip
    when: {account: acct_vip}
    action: allow
  - id: watch-streams
    when: {stream: true}
    action: deny
    shadow: true
  - id: bad-net
    when: {client_ip: [203.0.113.0/24, "2001:db8:bad::/48"]}
    action: deny
    reason: go away
  - id: slow-model
    when: {model: "claude-opus-*", api: anthropic.messages}
    action: throttle
    retry_after: 30
  - id: scored
    when: {score: {weights: {proxy_headers: 2, accounts_per_ip: 0.5}, threshold: 3}}
    action: deny
"""
POLICY = parse_policy(RULES)


def facts(ip="198.51.100.7", **kw) -> Facts:
    f = Facts("req_1", "POST", "/v1/messages", ipaddress.ip_address(ip),
              ipaddress.ip_address(ip), api="anthropic.messages", model="claude-haiku")
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def test_default_allow():
    assert decide(facts(), POLICY) == Decision("allow", "default", "no rule matched")


def test_cidr_deny_v4_and_v6():
    d = decide(facts("203.0.113.9"), POLICY)
    assert (d.action, d.rule, d.reason, d.kind, d.enforced) == (
        "deny", "bad-net", "go away", "permission", True)
    assert decide(facts("2001:db8:bad::1"), POLICY).rule == "bad-net"
    assert decide(facts("2001:db8:bae::1"), POLICY).rule == "default"


def test_allow_rule_exempts_before_deny():
    d = decide(facts("203.0.113.9", account="acct_vip"), POLICY)
    assert (d.action, d.rule, d.enforced) == ("allow", "vip", False)


def test_shadow_rule_logged_but_not_enforced():
    d = decide(facts(stream=True), POLICY)
    assert (d.action, d.rule, d.shadow, d.enforced, d.shadow_rules) == (
        "deny", "watch-streams", True, False, ("watch-streams",))


def test_enforcing_rule_wins_over_earlier_shadow_match():
    d = decide(facts("203.0.113.9", stream=True), POLICY)
    assert (d.rule, d.shadow, d.enforced, d.shadow_rules) == (
        "bad-net", False, True, ("watch-streams",))


def test_throttle_carries_retry_after():
    d = decide(facts(model="claude-opus-4"), POLICY)
    assert (d.action, d.kind, d.retry_after_s) == ("throttle", "rate_limit", 30.0)
    assert decide(facts(model="claude-opus-4", api="openai.chat"), POLICY).rule == "default"


def test_score_threshold():
    assert decide(facts(signals={"proxy_headers": True}), POLICY).rule == "default"
    d = decide(facts(signals={"proxy_headers": True, "accounts_per_ip": 2}), POLICY)
    assert d.rule == "scored"


def test_bad_body_and_non_model_paths():
    d = decide(facts(body_error="body is not valid JSON"), POLICY)
    assert (d.rule, d.kind, d.reason) == ("bad_body", "invalid_request", "body is not valid JSON")
    strict = parse_policy("settings: {non_model_paths: deny}\n")
    d = decide(facts(api=None), strict)
    assert (d.action, d.rule) == ("deny", "non_model_path")
    assert decide(facts(api=None), POLICY).rule == "default"
