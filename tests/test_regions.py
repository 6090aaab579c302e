"""Region rules decided on real demo .mmdb lookups (no mocks), every outcome."""

from __future__ import annotations

import ipaddress

import pytest

from hydraguard.decide import decide
from hydraguard.facts import Facts
from hydraguard.geo import GeoDatabases
from hydraguard.policy import PolicyError, load_policy, parse_policy
from hydraguard_dev.procs import ROOT

GEO = GeoDatabases({"location": ROOT / "geoip/demo-city.mmdb"})
ALLOW_LIST = load_policy(ROOT / "rules/examples/supported-countries.yaml")
SANCTIONS = load_policy(ROOT / "rules/examples/sanctions.yaml")


def facts(ip: str, account: str | None = None) -> Facts:
    a = ipaddress.ip_address(ip)
    return Facts("r", "POST", "/v1/messages", a, a, account=account,
                 api="anthropic.messages", geo=GEO.lookup(a))


@pytest.mark.parametrize(("ip", "action", "rule", "shadow", "reason"), [
    ("192.0.2.1", "allow", "default", False, "no rule matched"),  # US
    ("2001:db8:2::1", "allow", "default", False, "no rule matched"),  # GB v6
    ("192.0.2.49", "deny", "supported-countries", False, "country CN is not supported"),
    ("192.0.2.129", "deny", "supported-countries", False, "region UA-43 is not supported"),
    ("192.0.2.177", "deny", "supported-countries", False, "region UA-09 is not supported"),
    ("192.0.2.193", "allow", "default", False, "no rule matched"),  # UA-30 Kyiv
    ("198.51.100.49", "deny", "supported-countries", False, "client country unknown"),
    ("192.0.2.113", "deny", "supported-countries", True,
     "no GeoIP record for the client address"),  # no record -> shadow
    ("10.1.2.3", "allow", "default", False, "no rule matched"),  # private
    ("198.51.100.33", "allow", "default", False, "no rule matched"),  # anycast US: check
    ("192.0.2.241", "allow", "default", False, "no rule matched"),  # exempt CIDR (no record)
])
def test_allow_list_outcomes(ip, action, rule, shadow, reason):
    d = decide(facts(ip), ALLOW_LIST)
    assert (d.action, d.rule, d.shadow, d.reason) == (action, rule, shadow, reason)
    if d.action == "deny":
        assert d.kind == "region"


def test_exempt_account_and_allow_rule():
    d = decide(facts("192.0.2.49", account="acct_00000000000000000000"), ALLOW_LIST)
    assert (d.action, d.rule) == ("allow", "staff-exempt")


@pytest.mark.parametrize(("ip", "rule"), [
    ("192.0.2.65", "sanctions"),  # RU
    ("192.0.2.81", "sanctions"),  # KP
    ("192.0.2.145", "sanctions"),  # UA-40
    ("192.0.2.1", "default"),  # US
    ("192.0.2.113", "default"),  # no record: deny-list lets it pass
    ("198.51.100.1", "default"),  # CN with registered US: decided on country CN -> not listed
])
def test_sanctions_deny_list(ip, rule):
    d = decide(facts(ip), SANCTIONS)
    assert d.rule == rule
    if rule == "sanctions":
        assert d.reason == "Country, region, or territory not supported"


def test_combined_allow_and_deny_lists_and_throttle_outcome():
    p = parse_policy("""
rules:
  - id: r
    region:
      allow_countries: [US, CN, GB]
      deny_countries: [CN]
      private: throttle
    action: deny
""")
    assert decide(facts("192.0.2.49"), p).rule == "r"  # CN denied even though allowed
    assert decide(facts("192.0.2.1"), p).rule == "default"
    assert decide(facts("192.0.2.33"), p).reason == "country DE is not supported"
    d = decide(facts("10.0.0.1"), p)
    assert (d.action, d.kind, d.reason) == ("throttle", "rate_limit",
                                            "private or reserved client address")


def test_mismatch_is_exposed_as_signal_and_logged():
    g = GEO.lookup("198.51.100.1")
    assert (g.country, g.registered_country, g.country_mismatch) == ("CN", "US", True)


def test_region_schema_errors():
    with pytest.raises(PolicyError) as e:
        parse_policy("rules:\n  - id: r\n    action: deny\n    region: {alow_countries: [US], "
                     "private: maybe}\n", "r.yaml")
    assert [str(i) for i in e.value.issues] == [
        "r.yaml:4:14: rules[0].region: unknown key 'alow_countries' "
        "(did you mean \"allow_countries\"?)",
        "r.yaml:4:45: rules[0].region.private: 'maybe' is not one of: action, allow, deny, "
        "throttle, shadow",
    ]


def test_represented_and_registered_country_conditions():
    p = parse_policy("""
rules:
  - id: military
    when: {represented_country: US}
    action: allow
  - id: registered-us
    when: {registered_country: [us]}
    action: deny
""")
    assert decide(facts("198.51.100.17"), p).rule == "military"  # DE, represented US military
    assert decide(facts("198.51.100.1"), p).rule == "registered-us"  # CN registered to US
    assert decide(facts("192.0.2.49"), p).rule == "default"
