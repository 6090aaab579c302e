"""Rules loading: exact error messages with file:line:column, all errors at once."""

import ipaddress

import pytest

from hydraguard.policy import PolicyError, load_policy, parse_policy
from hydraguard.policy.conditions import All, InNetworks


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "r.yaml")
    return [str(i) for i in e.value.issues]


def test_shipped_default_rules_load():
    p = load_policy("rules/default.yaml")
    assert [r.id for r in p.rules] == ["sanctioned-regions", "documentation-net-blocked"]
    assert p.settings.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),
                                          ipaddress.ip_network("::1/128"))


def test_all_errors_reported_at_once_with_positions_and_hints():
    text = (
        "version: 1\n"
        "setings: {}\n"
        "rules:\n"
        "  - id: a\n"
        "    action: deny\n"
        "    when: {client_ip: [300.1.1.1], contry: [US]}\n"
        "  - id: b\n"
        "    action: dney\n"
        "    shadow: yes please\n"
    )
    assert errors_of(text) == [
        "r.yaml:2:1: top level: unknown key 'setings' (did you mean \"settings\"?)",
        "r.yaml:6:24: rules[0].when.client_ip[0]: '300.1.1.1' is not an IP network (CIDR)",
        "r.yaml:6:36: rules[0].when: unknown test 'contry' (did you mean \"country\"?)",
        "r.yaml:8:13: rules[1].action: 'dney' is not one of: allow, deny, throttle "
        "(did you mean \"deny\"?)",
        "r.yaml:9:13: rules[1].shadow: expected true or false, got a string ('yes please')",
    ]


def test_duplicate_rule_id():
    text = "rules:\n  - {id: a, action: deny}\n  - {id: a, action: allow}\n"
    assert errors_of(text) == ["r.yaml:3:6: rules: duplicate rule id 'a' (first at line 2)"]


def test_duplicate_yaml_key():
    assert errors_of("rules: []\nrules: []\n") == [
        "r.yaml:2:1: duplicate key 'rules' (first at line 1)"]


def test_broken_yaml_has_position():
    msgs = errors_of("rules:\n  - id: a\n    action: [deny\n")
    assert len(msgs) == 1 and msgs[0].startswith("r.yaml:4:1: invalid YAML")


def test_missing_required_keys_and_types():
    assert errors_of("rules:\n  - when: {stream: 3}\n") == [
        "r.yaml:2:5: rules[0]: missing required key 'action'",
        "r.yaml:2:5: rules[0]: missing required key 'id'",
        "r.yaml:2:20: rules[0].when.stream: expected true or false, got a number (3)",
    ]


def test_unreadable_file(tmp_path):
    with pytest.raises(PolicyError) as e:
        load_policy(tmp_path / "nope.yaml")
    assert str(e.value.issues[0]).startswith(f"{tmp_path / 'nope.yaml'}:1:1: cannot read")


def test_condition_compiles_to_predicates():
    p = parse_policy("rules:\n  - id: x\n    action: deny\n"
                     "    when: {client_ip: 10.0.0.0/8, stream: true}\n")
    w = p.rules[0].when
    assert isinstance(w, All) and isinstance(w.parts[0], InNetworks)
