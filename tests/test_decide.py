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


# -- what cannot be metered, and batches ---------------------------------------------------

def test_unknown_posts_and_upgrades_are_refused_unless_an_allow_rule_matches():
    d = decide(facts(api=None, route="unknown", path="/v1/images/generations"), POLICY)
    assert (d.action, d.rule, d.kind, d.reason) == (
        "deny", "unmetered_path", "permission",
        "POST /v1/images/generations is not served through this proxy: it cannot be metered")
    assert decide(facts(api=None, route="harmless"), POLICY).rule == "default"
    up = {"api": None, "route": "upgrade", "method": "GET", "path": "/v1/realtime"}
    d = decide(facts(**up), POLICY)
    assert (d.action, d.rule, d.kind) == ("deny", "unmetered_upgrade", "permission")
    d = decide(facts(account="acct_vip", **up), POLICY)  # an allow rule matched it
    assert (d.action, d.rule, d.enforced) == ("allow", "vip", False)
    d = decide(facts(ip="203.0.113.9", **up), POLICY)  # a refusing rule says why
    assert d.rule == "bad-net"


def test_too_many_choices():
    d = decide(facts(api="openai.chat", choices=64, samples=32), POLICY)
    assert (d.action, d.rule, d.kind, d.reason) == (
        "deny", "too_many_choices", "invalid_request",
        "the request asks for 32 outputs per prompt; at most 16 are served through this proxy")
    assert decide(facts(api="openai.chat", choices=64, samples=16), POLICY).rule == "default"


def test_a_batch_is_decided_per_model_it_names():
    from hydraguard.apis.batches import BatchSummary, ModelPart

    def part(model):
        return ModelPart(model, 1, 10, ((100, 1, 1),), ())

    mixed = BatchSummary(2, (part("claude-haiku"), part("claude-opus-4")))
    rules = parse_policy(RULES.replace("api: anthropic.messages",
                                       "api: [anthropic.messages, anthropic.batches]"))
    f = facts(api="anthropic.batches", route="batch", model=None, batch=mixed)
    d = decide(f, rules)
    assert (d.action, d.rule) == ("throttle", "slow-model")  # the opus part decides
    only = BatchSummary(1, (part("claude-haiku"),))
    assert decide(facts(api="anthropic.batches", route="batch", batch=only), rules
                  ).rule == "default"
    d = decide(facts(api="openai.batches", route="batch", unmetered="file unknown"), rules)
    assert (d.rule, d.kind, d.reason) == ("unmetered_batch", "permission", "file unknown")
