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


# -- every rules FILE declares `version` (in-memory documents given to parse_policy need not) --
def file_errors(path) -> list[str]:
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    return [str(i) for i in e.value.issues]


def test_a_rules_file_must_declare_its_version(tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("# my rules\nrules:\n  - {id: a, action: deny}\n")
    assert file_errors(r) == [
        f"{r}:2:1: top level: missing required key 'version': add `version: 1` (the rules "
        "format) at the top of the file"]
    r.write_text("version: 2\nrules: []\n")
    assert file_errors(r) == [f"{r}:1:10: version: 2 is above the maximum 1"]
    r.write_text("version: 1\n")  # a file without rules says so explicitly
    assert load_policy(r).rules == ()
    assert parse_policy("rules:\n  - {id: a, action: deny}\n").rules[0].id == "a"


@pytest.mark.parametrize("text, what", [("", "empty"), ("\n  \n", "empty"),
                                        ("# all rules removed\n", "only comments")])
def test_an_empty_rules_file_is_an_error_not_no_rules(tmp_path, text, what):
    r = tmp_path / "r.yaml"
    r.write_text(text)
    assert file_errors(r) == [
        f"{r}:1:1: the rules file is {what} (a rules file declares `version: 1`; that line "
        "alone means a file without rules)"]


def test_an_included_file_must_declare_its_version_too(tmp_path):
    (tmp_path / "main.yaml").write_text("version: 1\ninclude: [part.yaml]\n")
    (tmp_path / "part.yaml").write_text("")
    assert file_errors(tmp_path / "main.yaml") == [
        f"{tmp_path / 'part.yaml'}:1:1: the rules file is empty (a rules file declares "
        "`version: 1`; that line alone means a file without rules)"]


# -- reference errors come out together with schema errors (one run shows everything) -------
def test_reference_errors_reported_with_schema_errors():
    text = (
        "version: 1\n"
        "settings: {bad_body: maybe}\n"          # schema error in another section
        "state: {backend: memroy}\n"             # schema error in the state section
        "clusters:\n"
        "  - {id: acct, key: [account]}\n"
        "  - {id: broken, key: [acount]}\n"      # schema error in a cluster
        "budgets:\n"
        "  - id: a\n"
        "    clusters: [acct, nope]\n"           # reference error: unknown cluster
        "    windows: [{per: day, tokens: 10}]\n"
        "  - id: b\n"
        "    clusters: [broken]\n"               # names the broken cluster: no second error
        "    windows: [{per: dya, tokens: 10}]\n"  # schema error in a budget
        "  - id: c\n"
        "    windows: [{per: day, seconds: 5, tokens: 10}]\n"  # cross-field error
        "rules:\n"
        "  - {id: r, action: dney}\n"
    )
    assert errors_of(text) == [
        "r.yaml:2:22: settings.bad_body: 'maybe' is not one of: deny, pass",
        "r.yaml:3:18: state.backend: 'memroy' is not one of: memory, redis "
        "(did you mean \"memory\"?)",
        "r.yaml:6:24: clusters[1].key[0]: 'acount' is not one of: account, ip, prefix, asn, "
        "country, ja4, api, model, cluster (did you mean \"account\"?)",
        "r.yaml:9:5: budgets[0].clusters: unknown cluster 'nope' (known: acct, broken)",
        "r.yaml:13:21: budgets[1].windows[0].per: 'dya' is not one of: second, minute, hour, "
        "day, week (did you mean \"day\"?)",
        "r.yaml:15:15: budgets[2].windows[0]: give exactly one of per or seconds",
        "r.yaml:17:21: rules[0].action: 'dney' is not one of: allow, deny, throttle "
        "(did you mean \"deny\"?)",
    ]
