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


# -- a failed lookup (damaged database) is refused, not taken for "no record" -----------------
DENY_LIST = """
rules:
  - id: sanctions
    region: {{deny_countries: [KP], no_record: allow, unknown_country: allow{extra}}}
    action: deny
"""


@pytest.fixture
def damaged_geo(tmp_path):
    """A City database damaged (KP's record) under the open reader, as an in-place copy does."""
    from .geoip_util import build_city, damage_record

    path = build_city(tmp_path)
    with GeoDatabases({"location": path}, auto_reload=False) as geo:
        damage_record(path)
        yield geo


def damaged_facts(geo, ip: str) -> Facts:
    a = ipaddress.ip_address(ip)
    return Facts("r", "POST", "/v1/messages", a, a, api="anthropic.messages",
                 geo=geo.lookup(a))


@pytest.mark.parametrize(("extra", "action", "rule", "shadow"), [
    ("", "deny", "sanctions", False),  # default: the rule's action
    (", lookup_error: deny", "deny", "sanctions", False),
    (", lookup_error: throttle", "throttle", "sanctions", False),
    (", lookup_error: shadow", "deny", "sanctions", True),
    (", lookup_error: allow", "allow", "default", False),
])
def test_failed_lookup_takes_lookup_error_outcome(damaged_geo, extra, action, rule, shadow):
    """A deny-list with no_record: allow let a KP address through when its lookup failed."""
    p = parse_policy(DENY_LIST.format(extra=extra))
    f = damaged_facts(damaged_geo, "192.0.2.81")
    assert f.geo.location_error
    d = decide(f, p)
    assert (d.action, d.rule, d.shadow) == (action, rule, shadow)
    if rule == "sanctions":
        assert d.reason == "GeoIP lookup of the client address failed"
    assert decide(damaged_facts(damaged_geo, "192.0.2.1"), p).rule == "default"  # US
    assert decide(damaged_facts(damaged_geo, "192.0.2.113"), p).rule == "default"  # no record


def test_failed_lookup_survives_the_log_for_replay(damaged_geo):
    from hydraguard.gather import geo_from_log

    g = damaged_facts(damaged_geo, "192.0.2.81").geo
    assert geo_from_log(g.to_log()) == g
    a = ipaddress.ip_address("192.0.2.81")
    f = Facts("r", "POST", "/v1/messages", a, a, api="anthropic.messages",
              geo=geo_from_log(g.to_log()))
    assert decide(f, parse_policy(DENY_LIST.format(extra=""))).rule == "sanctions"


def test_lookup_error_schema():
    with pytest.raises(PolicyError) as e:
        parse_policy("rules:\n  - id: r\n    action: deny\n    region: {deny_countries: [KP], "
                     "lookup_error: refuse}\n", "r.yaml")
    assert [str(i) for i in e.value.issues] == [
        "r.yaml:4:50: rules[0].region.lookup_error: 'refuse' is not one of: action, allow, "
        "deny, throttle, shadow"]


# -- country and subdivision codes are ISO 3166 ----------------------------------------------
def test_codes_are_checked_against_iso_3166_with_hints():
    text = """rules:
  - id: r
    action: deny
    region:
      deny_countries: [UK, XX, GBR, UA-43, ru]
      allow_countries: [Germany, SU]
      deny_subdivisions: [UA43, UA-99, RU, Crimea, ukr-40]
  - id: c
    action: deny
    when: {country: UK, subdivision: [GBENG], registered_country: [826], represented_country: EL}
  - id: n
    action: deny
    region: {deny_countries: [NO, XK]}
"""
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "r.yaml")
    assert [str(i) for i in e.value.issues] == [
        "r.yaml:5:24: rules[0].region.deny_countries[0]: 'UK' is not an ISO 3166-1 alpha-2 "
        "country code (did you mean \"GB\", United Kingdom?)",
        "r.yaml:5:28: rules[0].region.deny_countries[1]: 'XX' is not an ISO 3166-1 alpha-2 "
        "country code",
        "r.yaml:5:32: rules[0].region.deny_countries[2]: 'GBR' is not an ISO 3166-1 alpha-2 "
        "country code (did you mean \"GB\", United Kingdom?)",
        "r.yaml:5:37: rules[0].region.deny_countries[3]: 'UA-43' is a subdivision (ISO 3166-2) "
        "code, not a country code",
        "r.yaml:6:25: rules[0].region.allow_countries[0]: 'Germany' is not an ISO 3166-1 "
        "alpha-2 country code (did you mean \"DE\", Germany?)",
        "r.yaml:6:34: rules[0].region.allow_countries[1]: 'SU' is a withdrawn ISO 3166-1 code "
        "(USSR, Union of Soviet Socialist Republics)",
        "r.yaml:7:27: rules[0].region.deny_subdivisions[0]: 'UA43' is not an ISO 3166-2 "
        "subdivision code (did you mean \"UA-43\", Avtonomna Respublika Krym?)",
        "r.yaml:7:33: rules[0].region.deny_subdivisions[1]: 'UA-99' is not an ISO 3166-2 "
        "subdivision code (no subdivision 99 in UA)",
        "r.yaml:7:40: rules[0].region.deny_subdivisions[2]: 'RU' is a country code, not a "
        "subdivision (ISO 3166-2) code",
        "r.yaml:7:44: rules[0].region.deny_subdivisions[3]: 'Crimea' is not an ISO 3166-2 "
        "subdivision code (did you mean \"UA-43\", Avtonomna Respublika Krym?)",
        "r.yaml:7:52: rules[0].region.deny_subdivisions[4]: 'ukr-40' is not an ISO 3166-2 "
        "subdivision code (did you mean \"UA-40\", Sevastopol?)",
        "r.yaml:10:21: rules[1].when.country: 'UK' is not an ISO 3166-1 alpha-2 country code "
        "(did you mean \"GB\", United Kingdom?)",
        "r.yaml:10:39: rules[1].when.subdivision[0]: 'GBENG' is not an ISO 3166-2 subdivision "
        "code (did you mean \"GB-ENG\", England?)",
        "r.yaml:10:68: rules[1].when.registered_country[0]: '826' is not an ISO 3166-1 alpha-2 "
        "country code (did you mean \"GB\", United Kingdom?)",
        "r.yaml:10:95: rules[1].when.represented_country: 'EL' is not an ISO 3166-1 alpha-2 "
        "country code (did you mean \"GR\", Greece?)",
        "r.yaml:13:31: rules[2].region.deny_countries[0]: expected a country code (ISO 3166-1 "
        "alpha-2), got a boolean (false) (YAML reads a bare NO as false: write Norway as "
        "\"NO\")",
    ]


def test_valid_codes_any_case_and_kosovo():
    p = parse_policy("""
rules:
  - id: r
    action: deny
    region: {deny_countries: [kp, XK, "NO"], deny_subdivisions: [ua-43, GB-ENG]}
""")
    spec = p.rules[0].region
    assert spec.deny_countries == frozenset({"KP", "XK", "NO"})
    assert spec.deny_subdivisions == frozenset({"UA-43", "GB-ENG"})
    assert decide(facts("192.0.2.129"), p).reason == "region UA-43 is not supported"
