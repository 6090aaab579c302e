"""The `indicators:` rules section: compiled settings, exact errors with file:line:col, shipped
example files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydraguard.policy import PolicyError, load_policy, parse_policy
from hydraguard.policy.indicator_model import (
    BehaviourSettings,
    HeaderSettings,
    IndicatorSettings,
    TemplateSettings,
    TlsSettings,
)
from hydraguard.policy.indicator_sections import INDICATORS, SECTIONS
from hydraguard.policy.schema import Field, Struct

ROOT = Path(__file__).resolve().parents[1]


def errors_of(text: str, filename: str = "r.yaml") -> list[str]:
    with pytest.raises(PolicyError) as e:
        parse_policy(text, filename)
    return [str(i) for i in e.value.issues]


def test_absent_section_is_none_and_empty_subsections_take_defaults():
    assert parse_policy("version: 1\n").indicators is None
    p = parse_policy("indicators:\n  headers: {}\n  tls:\n  behaviour: {}\n")
    assert p.indicators == IndicatorSettings(
        headers=HeaderSettings(), tls=TlsSettings(), behaviour=BehaviourSettings())
    p = parse_policy("indicators:\n  prompts: {templates: {}}\n")
    assert p.indicators.prompts.templates == TemplateSettings()
    assert p.indicators.prompts.patterns == ()


def test_structural_errors_with_positions_and_hints():
    text = (
        "version: 1\n"
        "indicators:\n"
        "  ip:\n"
        "    hosting_asn: [1]\n"
        "    proxy_asns: [ASX]\n"
        "    lists:\n"
        "      - {name: Bad Name, path: x, format: csv}\n"
        "  headers: {ignore: [x-forwarded-fro]}\n"
        "  tls:\n"
        "    sdk_fingerprints: {python: [zz13]}\n"
        "  behaviour: {window: 0, max_keys: -1}\n"
        "  promts: {}\n"
    )
    assert errors_of(text) == [
        "r.yaml:4:5: indicators.ip: unknown key 'hosting_asn' (did you mean \"hosting_asns\"?)",
        "r.yaml:5:18: indicators.ip.proxy_asns[0]: 'ASX' is not an AS number "
        "(e.g. 64510 or AS64510)",
        "r.yaml:7:16: indicators.ip.lists[0].name: 'Bad Name' is not a valid name (lower-case "
        "letters, digits, '_' and '-', at most 64, starting with a letter or digit)",
        "r.yaml:7:43: indicators.ip.lists[0].format: 'csv' is not one of: plain, tor, aws, gcp",
        "r.yaml:8:22: indicators.headers.ignore[0]: 'x-forwarded-fro' is not a proxy header "
        "hydraguard looks at (did you mean \"x-forwarded-for\"?)",
        "r.yaml:10:33: indicators.tls.sdk_fingerprints.python[0]: 'zz13' is not a JA4 "
        "fingerprint or prefix (e.g. t13d or t13d1516h2_8daaf6152771_e5627efa2ab1)",
        "r.yaml:11:23: indicators.behaviour.window: 0 is below the minimum 1",
        "r.yaml:11:36: indicators.behaviour.max_keys: -1 is below the minimum 1",
        "r.yaml:12:3: indicators: unknown key 'promts' (did you mean \"prompts\"?)",
    ]


def test_compile_errors_patterns_templates_asns():
    text = (
        "version: 1\n"
        "indicators:\n"
        "  ip: {hosting_asns: [64510]}\n"
        "  prompts:\n"
        "    patterns:\n"
        "      - {name: a, regex: \"(unclosed\"}\n"
        "      - {name: b, phrase: x, regex: y}\n"
        "      - {name: c}\n"
        "      - {name: b, phrase: hi}\n"
        "      - {name: d, phrase: hi, gate: [x]}\n"

    )
    assert errors_of(text) == [
        "r.yaml:3:8: indicators.ip: hosting_asns / proxy_asns need a geoip: section with an "
        "asn (or IPinfo location) database",
        "r.yaml:6:19: indicators.prompts.patterns[0].regex: invalid regular expression: "
        "missing ), unterminated subpattern at position 0",
        "r.yaml:7:9: indicators.prompts.patterns[1]: give exactly one of phrase, regex, "
        "builtin (got phrase, regex)",
        "r.yaml:8:9: indicators.prompts.patterns[2]: give exactly one of phrase, regex, builtin",
        "r.yaml:9:10: indicators.prompts.patterns[3].name: duplicate pattern name 'b'",
        "r.yaml:10:31: indicators.prompts.patterns[4].gate: only for regex patterns",
    ]


def test_list_files_checked_relative_to_rules_folder(tmp_path):
    (tmp_path / "ok.txt").write_text("192.0.2.0/24\n")
    (tmp_path / "bad.json").write_text('{"prefixes": [{"ip_prefix": "nope"}]}')
    (tmp_path / "empty.txt").write_text("# nothing\n")
    rules = tmp_path / "r.yaml"
    text = (
        "indicators:\n"
        "  ip:\n"
        "    lists:\n"
        "      - {name: ok, path: ok.txt}\n"
        "      - {name: missing, path: sub/missing.txt}\n"
        "      - {name: bad, path: bad.json, format: aws}\n"
        "      - {name: empty, path: empty.txt}\n"
        "      - {name: ok, path: ok.txt}\n"
    )
    assert errors_of(text, str(rules)) == [
        f"{rules}:5:25: indicators.ip.lists[1].path: cannot read "
        f"{tmp_path}/sub/missing.txt: No such file or directory",
        f"{rules}:6:21: indicators.ip.lists[2].path: {tmp_path}/bad.json is not a valid aws "
        "list: prefixes[0]: no valid ip_prefix: 'nope'",
        f"{rules}:7:23: indicators.ip.lists[3].path: {tmp_path}/empty.txt holds no networks",
        f"{rules}:8:10: indicators.ip.lists[4].name: duplicate list name 'ok'",
    ]
    rules.write_text("version: 1\n" + text.rsplit("      - {name: missing", 1)[0])
    p = load_policy(rules)
    (spec,) = p.indicators.ip.lists
    assert (spec.name, spec.path, spec.format, spec.reload_interval) == (
        "ok", str(tmp_path / "ok.txt"), "plain", 60.0)


def test_compiled_values(tmp_path):
    p = parse_policy(
        "settings: {trusted_proxies: [10.0.0.0/8]}\n"
        "geoip: {asn: x.mmdb}\n"
        "indicators:\n"
        "  ip: {hosting_asns: [AS64510, 64511], proxy_asns: [as65551], anonymous: false}\n"
        "  headers: {ignore: [Via]}\n"
        "  tls: {sdk_fingerprints: {Python: T13D, node: [t13d1516h2_8daaf6152771]}}\n"
        "  prompts:\n"
        "    patterns:\n"
        "      - {name: cot, builtin: cot_elicitation, where: user}\n"
        "      - {name: p, phrase: write it out, where: system}\n"
        "      - {name: r, regex: 'Show\\s+work', gate: [Show, work]}\n")
    ind = p.indicators
    assert ind.ip.hosting_asns == {64510, 64511} and ind.ip.proxy_asns == {65551}
    assert ind.ip.anonymous is False
    assert ind.headers.ignore == {"via"}
    assert [str(n) for n in ind.headers.trusted_proxies] == ["10.0.0.0/8"]
    assert ind.tls.sdk_fingerprints == (("python", ("t13d",)),
                                        ("node", ("t13d1516h2_8daaf6152771",)))
    cot, ph, rx = ind.prompts.patterns
    assert cot.flags.endswith(" user") and cot.flags.startswith("regex gate=")
    assert (ph.regex, ph.flags) == ("write it out", "phrase system")
    assert (rx.regex, rx.flags) == ("(?i)Show\\s+work", "regex gate=show|work window=400")


def test_disabled_subsections_compile_to_none():
    p = parse_policy("indicators:\n  ip: {enabled: false}\n  headers: {enabled: false}\n"
                     "  prompts: {patterns: [{name: a, phrase: b}], templates: "
                     "{enabled: false}}\n")
    assert (p.indicators.ip, p.indicators.headers, p.indicators.prompts.templates) == (
        None, None, None)
    assert len(p.indicators.prompts.patterns) == 1


def _walk(spec, path="indicators"):
    if isinstance(spec, Struct):
        for name, f in spec.fields.items():
            yield f"{path}.{name}", f
            yield from _walk(f.spec, f"{path}.{name}")
    elif hasattr(spec, "item"):
        yield from _walk(spec.item, path + "[]")


def test_every_field_has_doc_and_every_leaf_an_example():
    assert set(SECTIONS) == {"indicators"} and isinstance(SECTIONS["indicators"], Field)
    for path, f in _walk(INDICATORS):
        assert f.doc, path
        if not isinstance(f.spec, Struct):
            assert f.example is not None, path


@pytest.mark.parametrize("path", ["rules/examples/indicators.yaml", "rules/default.yaml"])
def test_shipped_files_load(path):
    p = load_policy(ROOT / path)
    assert p.indicators is not None


def test_example_uses_every_indicator():
    ind = load_policy(ROOT / "rules/examples/indicators.yaml").indicators
    assert ind.ip and ind.headers and ind.tls and ind.behaviour and ind.prompts
    assert {s.format for s in ind.ip.lists} == {"plain", "tor", "aws", "gcp"}
    assert ind.prompts.templates is not None
