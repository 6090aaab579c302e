"""`hydraguard check | explain | test | replay`: exact output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hydraguard.cli import main
from hydraguard_dev.procs import ROOT

DEMO_NOTE = ("is a hydraguard demo database: fictional data for documentation address ranges "
             "only; real client addresses have no record in it")
SANCTIONS_OK = [
    "rules/examples/sanctions.yaml:11:3: warning: geoip.location ../../geoip/demo-city.mmdb "
    + DEMO_NOTE,
    "rules/examples/sanctions.yaml: ok — 1 rule, 0 clusters, 0 budgets; geoip location "
    "../../geoip/demo-city.mmdb (geoip2-city, demo data, built 2025-01-01, verified); "
    "1 warning"]


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HYDRAGUARD_ACCOUNT_SECRET", "test-secret")


def run(capsys, *argv) -> tuple[int, list[str]]:
    rc = main(list(argv))
    out = capsys.readouterr().out
    return rc, out.splitlines()


# -- check ----------------------------------------------------------------------------------
def test_check_ok_summary(capsys):
    rc, out = run(capsys, "check", "rules/examples/sanctions.yaml")
    assert (rc, out) == (0, SANCTIONS_OK)


def test_check_all_shipped_rules(capsys):
    rc, out = run(capsys, "check", "rules/default.yaml", "rules/examples/sanctions.yaml",
                  "rules/examples/supported-countries.yaml")
    summaries = [line for line in out if ": warning: " not in line]
    assert rc == 0 and len(summaries) == 3 and len(out) == 3 + 3 + 1 + 2  # demo warnings
    assert out[:3] == [f"rules/default.yaml:{n}:3: warning: geoip.{role} ../geoip/{f} "
                       f"{DEMO_NOTE}" for n, role, f in (
                           (16, "location", "demo-city.mmdb"), (17, "asn", "demo-asn.mmdb"),
                           (18, "anonymous", "demo-anonymous-ip.mmdb"))]
    assert summaries[0].startswith("rules/default.yaml: ok — 2 rules, ")
    assert summaries[0].endswith(
        "geoip location ../geoip/demo-city.mmdb (geoip2-city, demo data, built 2025-01-01, "
        "verified), asn ../geoip/demo-asn.mmdb (asn, demo data, built 2025-01-01, verified), "
        "anonymous ../geoip/demo-anonymous-ip.mmdb (anonymous, demo data, built 2025-01-01, "
        "verified); 3 warnings")


def test_check_errors_listed_and_exit_1(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - {id: a, action: dney}\n"
                   "  - {id: a, action: deny, wen: {}}\n")
    rc, out = run(capsys, "check", str(bad), "rules/examples/sanctions.yaml")
    assert rc == 1
    assert out == [
        f"{bad}:3:21: rules[0].action: 'dney' is not one of: allow, deny, throttle "
        "(did you mean \"deny\"?)",
        f"{bad}:4:6: rules: duplicate rule id 'a' (first at line 3)",
        f"{bad}:4:27: rules[1]: unknown key 'wen' (did you mean \"when\"?)",
        f"{bad}: 3 errors",
        *SANCTIONS_OK,
    ]


def test_check_warns_about_signals_nothing_sets(capsys, tmp_path):
    r = tmp_path / "r.yaml"
    asn = ROOT / "geoip" / "demo-asn.mmdb"
    r.write_text(
        "version: 1\n"
        f"geoip: {{asn: {asn}}}\n"
        "indicators:\n"
        "  ip: {hosting_asns: [64510]}\n"
        "rules:\n"
        "  - {id: typo, action: deny, when: {signal: ip.hostng_asn}}\n"
        "  - id: no-headers\n"
        "    action: deny\n"
        "    when: {score: {weights: {ip.hosting_asn: 1, headers.proxy: 2}, threshold: 2}}\n"
        "  - {id: fine, action: deny, when: {not: {signal: ip.proxy_asn}}}\n")
    rc, out = run(capsys, "check", str(r))
    assert rc == 0  # warnings do not fail a check
    assert out == [
        f"{r}:6:5: warning: rule 'typo' tests signal 'ip.hostng_asn', which nothing sets "
        "with these rules (did you mean \"ip.hosting_asn\"?)",
        f"{r}:7:5: warning: rule 'no-headers' tests signal 'headers.proxy', which nothing sets "
        "with these rules",
        f"{r}:2:9: warning: geoip.asn {asn} {DEMO_NOTE}",
        f"{r}: ok — 3 rules, 0 clusters, 0 budgets, indicators on; geoip asn {asn} "
        "(asn, demo data, built 2025-01-01, verified); 3 warnings",
    ]


LINKED = (
    "version: 1\n"
    "clusters:\n"
    "  - id: acct\n"
    "    key: [cluster]\n"
    "    link:\n"
    "      evidence:\n"
    "        - {kind: ip}\n"
    "        - {kind: template, min_accounts: 10}\n"
    "budgets:\n"
    "  - {id: b, windows: [{per: day, tokens: 1000}]}\n"
)


NO_FLAGS = ("{r}:6:7: warning: cluster 'acct': none of the flagged-network signals can be "
            "set (configure indicators.ip): every shared value counts at its unflagged weight")


def test_check_warns_about_flagged_signals_and_asn_evidence(capsys, tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text(LINKED.replace("      evidence:\n", "      flagged_signals: [ip.hostng, "
                                "ip.list.*]\n      evidence:\n        - {kind: asn}\n")
                 + "indicators:\n  prompts: {templates: {}}\n  ip: {}\n")
    rc, out = run(capsys, "check", str(r))
    assert (rc, out) == (0, [
        f"{r}:8:11: warning: cluster 'acct' links on evidence 'asn', but no geoip.asn "
        "database is configured: the ASN is never known, so this evidence links nobody",
        f"{r}:6:7: warning: cluster 'acct': flagged signal 'ip.hostng' is never set under "
        "these rules (did you mean \"ip.hosting\"?)",
        f"{r}:6:7: warning: cluster 'acct': none of the flagged-network signals can be set "
        "(configure indicators.ip): every shared value counts at its unflagged weight",
        f"{r}: ok — 0 rules, 1 cluster, 1 budget, indicators on; no geoip; 3 warnings"])


def test_check_warns_about_template_evidence_without_template_indicator(capsys, tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text(LINKED)
    rc, out = run(capsys, "check", str(r))
    assert (rc, out) == (0, [
        f"{r}:8:11: warning: cluster 'acct' links on evidence 'template', but no "
        "indicators.prompts.templates indicator is configured: template.id is never set, so "
        "this evidence links nobody",
        NO_FLAGS.format(r=r),
        f"{r}: ok — 0 rules, 1 cluster, 1 budget; no geoip; 2 warnings"])
    r.write_text(LINKED + "indicators:\n  prompts: {templates: {}}\n  ip: {}\n")
    rc, out = run(capsys, "check", str(r))
    assert (rc, out) == (0, [f"{r}: ok — 0 rules, 1 cluster, 1 budget, indicators on; "
                             "no geoip"])


def test_check_warns_about_tls_evidence_without_tls_indicator(capsys, tmp_path):
    r = tmp_path / "r.yaml"
    tls = LINKED.replace("{kind: template, min_accounts: 10}", "{kind: tls_ua}")
    r.write_text(tls)
    rc, out = run(capsys, "check", str(r))
    assert (rc, out[0]) == (0, f"{r}:8:11: warning: cluster 'acct' links on evidence "
                            "'tls_ua', but no indicators.tls indicator is configured: tls.ja4 "
                            "is never set, so this evidence links nobody")
    r.write_text(tls + "indicators:\n  tls: {}\n  ip: {}\n")
    rc, out = run(capsys, "check", "--strict", str(r))
    assert (rc, len(out)) == (0, 1)


def test_check_strict_fails_on_warnings(capsys, tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text(LINKED)
    ok = tmp_path / "ok.yaml"
    ok.write_text("version: 1\nrules:\n  - {id: a, action: deny}\n")
    ok_line = f"{ok}: ok — 1 rule, 0 clusters, 0 budgets; no geoip"
    rc, out = run(capsys, "check", "--strict", str(r), str(ok))
    assert rc == 1 and len(out) == 4 and out[3] == ok_line
    rc, out = run(capsys, "check", "--strict", str(ok))
    assert (rc, out) == (0, [ok_line])
    rc, out = run(capsys, "check", "--strict", "rules/examples/sanctions.yaml")
    assert rc == 1 and out[-1].endswith("; 1 warning")  # demo GeoIP data is a warning
    p = subprocess.run([sys.executable, "-m", "hydraguard", "check", "--strict", str(r)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 1 and "2 warnings" in p.stdout


def test_check_reports_reference_and_schema_errors_in_one_run(capsys, tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text(LINKED.replace("{id: b, windows", "{id: b, clusters: [acc], windows")
                 + "  - {id: c, windows: [{per: day, tokens: -1}]}\n")
    rc, out = run(capsys, "check", str(r))
    assert (rc, out) == (1, [
        f"{r}:10:13: budgets[0].clusters: unknown cluster 'acc' (did you mean \"acct\"?) "
        "(known: acct)",
        f"{r}:11:42: budgets[1].windows[0].tokens: -1 is below the minimum 1",
        f"{r}: 2 errors"])


def test_check_geoip_that_does_not_open_is_an_error(capsys, tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("version: 1\ngeoip: {location: missing.mmdb}\n")
    rc, out = run(capsys, "check", str(r))
    assert rc == 1
    assert out == [f"geoip.location: GeoIP database {tmp_path / 'missing.mmdb'}: file not "
                   "found or not readable", f"{r}: 1 error"]
    r.write_text("version: 1\ngeoip: {location: missing.mmdb, optional: true}\n")
    rc, out = run(capsys, "check", str(r))
    assert (rc, out) == (0, [f"{r}: ok — 0 rules, 0 clusters, 0 budgets; geoip location "
                             "missing.mmdb (does not open; optional)"])


def test_check_folder_counts_files(capsys, tmp_path):
    (tmp_path / "a.yaml").write_text("version: 1\nrules:\n  - {id: a, action: deny}\n")
    (tmp_path / "b.yaml").write_text("version: 1\nrules:\n  - {id: b, action: deny}\n")
    rc, out = run(capsys, "check", str(tmp_path))
    assert (rc, out) == (0, [f"{tmp_path}: ok (2 files) — 2 rules, 0 clusters, 0 budgets; "
                             "no geoip"])


def test_check_as_a_process_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules: 3\n")
    p = subprocess.run([sys.executable, "-m", "hydraguard", "check", str(bad)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 1
    assert p.stdout.splitlines() == [f"{bad}:2:8: rules: expected a list, got a number (3)",
                                     f"{bad}: 1 error"]


# -- explain --------------------------------------------------------------------------------
def test_explain_region_denial(capsys):
    rc, out = run(capsys, "explain", "--rules", "rules/examples/sanctions.yaml",
                  "--ip", "192.0.2.130", "--key", "sk-test", "--model", "claude-x")
    assert rc == 0
    assert out == [
        "request   POST /v1/messages",
        "api       anthropic.messages, model claude-x, stream false, max_output 256, "
        "input_tokens_est 2",
        "client    192.0.2.130 (from peer; peer 192.0.2.130)",
        "account   acct_c26b000230cfc73a90c3",
        "geo       country UA, subdivisions UA-43",
        "signals   (none)",
        "rules",
        "  1. sanctions  deny            DECIDES",
        "     when: (always); region: region UA-43 is not supported -> action",
        "cluster   -",
        "budget    not reached (the rules refused the request)",
        "decision  deny by rule sanctions: Country, region, or territory not supported -> "
        "answered 403 (region)",
        "note      account secret from $HYDRAGUARD_ACCOUNT_SECRET",
    ]


def test_explain_forwarded_header_and_rule_trace(capsys):
    rc, out = run(capsys, "explain", "--rules", "rules/examples/supported-countries.yaml",
                  "--ip", "127.0.0.1", "--header", "x-forwarded-for: 192.0.2.17",
                  "--path", "/v1/chat/completions", "--model", "gpt-4o-mini", "--stream")
    assert rc == 0
    assert "client    192.0.2.17 (from x-forwarded-for; peer 127.0.0.1)" in out
    assert "api       openai.chat, model gpt-4o-mini, stream true, max_output -, " \
        "input_tokens_est 2" in out
    assert "     when: account 'acct_c26b000230cfc73a90c3' in ['acct_00000000000000000000']: " \
        "no" in out
    assert "     when: (always); exempt: client_ip 192.0.2.17 in 1 network(s): no; " \
        "region: passes (country GB)" in out
    assert out[-2] == "decision  allow by default: no rule matched -> forwarded upstream"


def test_explain_json_and_facts_file(capsys, tmp_path):
    facts = tmp_path / "f.json"
    facts.write_text(json.dumps({"ip": "203.0.113.9", "key": "k", "model": "m",
                                 "signals": {"ip.hosting": True}}))
    rc, out = run(capsys, "explain", "--rules", "rules/default.yaml", "--facts-json",
                  str(facts), "--json")
    assert rc == 0
    doc = json.loads("\n".join(out))
    assert doc["decision"]["action"] == "deny"
    assert doc["decision"]["rule"] == "documentation-net-blocked"
    assert doc["decision"]["status"] == 403
    assert [r["outcome"] for r in doc["rules"]] == ["no match", "decides"]
    assert doc["record"]["signals"]["ip.hosting"] is True
    assert doc["record"]["account"] != "k" and doc["record"]["account"].startswith("acct_")


def test_explain_invalid_rules_exit_2(capsys, tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("version: 1\nrulez: []\n")
    rc = main(["explain", "--rules", str(r)])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert err == [f"{r}:2:1: top level: unknown key 'rulez' (did you mean \"rules\"?)",
                   "hydraguard: 1 error(s) in the rules"]


# -- test -----------------------------------------------------------------------------------
def test_shipped_policy_tests_pass(capsys):
    rc, out = run(capsys, "test", "rules/")
    assert rc == 0, "\n".join(out)
    assert out[-1] == "32 passed, 0 failed"
    assert {line.split(":")[0] for line in out[:-1]} == {
        "rules/tests/default.yaml", "rules/tests/indicators.yaml", "rules/tests/sanctions.yaml",
        "rules/tests/supported-countries.yaml"}


def test_test_for_a_rules_file_finds_its_tests(capsys):
    rc, out = run(capsys, "test", "rules/examples/sanctions.yaml")
    assert (rc, out) == (0, [
        "rules/tests/sanctions.yaml: ok, 5 passed (rules: rules/examples/sanctions.yaml)",
        "5 passed, 0 failed"])


def test_failure_report(capsys, tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text(
        f"rules: {ROOT / 'rules/examples/sanctions.yaml'}\n"
        "cases:\n"
        "  - name: germany\n"
        "    request: {ip: 192.0.2.33}\n"
        "    expect: {action: allow}\n"
        "  - name: russia allowed?\n"
        "    request: {ip: 192.0.2.65}\n"
        "    expect: {action: allow, rule: default, forwarded: true}\n")
    rc, out = run(capsys, "test", str(t))
    assert rc == 1
    assert out == [
        f"{t}: 1 failed, 1 passed (rules: {ROOT / 'rules/examples/sanctions.yaml'})",
        f"  FAIL {t}:6:5 russia allowed?",
        "    action: expected 'allow', got 'deny'",
        "    rule: expected 'default', got 'sanctions'",
        "    forwarded: expected True, got False",
        "    decision: deny by sanctions: Country, region, or territory not supported",
        "      sanctions: decides -- when: (always); region: country RU is not supported "
        "-> action",
        "1 passed, 1 failed",
    ]


def test_invalid_test_file_exit_2(capsys, tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("rules: x.yaml\ncases:\n  - name: a\n    expect: {acton: deny}\n")
    rc, out = run(capsys, "test", str(t))
    assert rc == 2
    assert out == [f"{t}: ERROR",
                   f"  {t}:4:14: cases[0].expect: unknown key 'acton' (did you mean "
                   "\"action\"?)",
                   "0 passed, 0 failed, 1 file(s) with errors"]


# -- replay ---------------------------------------------------------------------------------
def _line(**kw) -> str:
    rec = {"ts": "2025-01-01T00:00:00.000Z", "request_id": "req_1", "client_ip": "192.0.2.33",
           "client_ip_source": "peer", "peer_ip": "192.0.2.33", "account": "acct_x",
           "method": "POST", "path": "/v1/messages", "api": "anthropic.messages",
           "model": "claude-x", "stream": False, "max_output": 100, "input_tokens_est": 5,
           "action": "allow", "rule": "default", "reason": "no rule matched", "shadow": False,
           "geo": {"found": True, "country": "DE", "subdivisions": ["DE-BE"]}}
    rec.update(kw)
    return json.dumps(rec)


def test_replay_counts_changes_examples_and_malformed(capsys, tmp_path):
    log = tmp_path / "d.jsonl"
    log.write_text("\n".join([
        _line(),
        _line(request_id="req_2"),
        _line(request_id="req_3", client_ip="192.0.2.65",
              geo={"found": True, "country": "RU"}),
        "{broken json",
        _line(request_id="req_4", client_ip="192.0.2.66", action="throttle",
              rule="cluster-tokens", stage="budget", geo={"found": True, "country": "DE"}),
        _line(request_id="req_5", action="deny", rule="old-rule", reason="x"),
        "[1, 2]",
    ]) + "\n")
    rc, out = run(capsys, "replay", str(log), "--rules", "rules/examples/sanctions.yaml")
    assert rc == 0
    assert out == [
        f"replayed 5 request(s) from {log} under rules/examples/sanctions.yaml: "
        "2 would change, 3 unchanged",
        "skipped 2 malformed line(s) (line 4, 7)",
        "changed (old -> new):",
        "        1  allow/default -> deny/sanctions",
        "        1  deny/old-rule -> allow/default",
        "unchanged:",
        "        2  allow/default",
        "        1  throttle/cluster-tokens [budget]",
        "examples:",
        "  allow/default -> deny/sanctions",
        "    req_3 2025-01-01T00:00:00.000Z 192.0.2.65 anthropic.messages claude-x: "
        "Country, region, or territory not supported",
        "  deny/old-rule -> allow/default",
        "    req_5 2025-01-01T00:00:00.000Z 192.0.2.33 anthropic.messages claude-x: "
        "no rule matched",
        "note: 1 budget refusal(s) kept as logged (budgets are not re-simulated)",
    ]


def test_replay_json(capsys, tmp_path):
    log = tmp_path / "d.jsonl"
    log.write_text(_line(client_ip="192.0.2.0/24", geo={"found": True, "country": "IR"}) + "\n")
    rc, out = run(capsys, "replay", str(log), "--rules", "rules/examples/sanctions.yaml",
                  "--json")
    doc = json.loads("\n".join(out))
    assert rc == 0
    assert doc["transitions"] == [{"old": "allow/default", "new": "deny/sanctions",
                                   "count": 1}]
    assert doc["truncated_ips"] == 1 and doc["malformed"] == 0


def test_replay_decides_batches_per_model_and_unmetered_posts(capsys, tmp_path):
    """A batch line carries its summary, so a rule on one of its models refuses it; a POST
    the old proxy forwarded unmetered is refused now; settlements are counted."""
    summary = {"requests": 3, "errors": 0, "coarse": False, "models": [
        {"model": "claude-haiku", "requests": 2, "input_tokens": 20,
         "outputs": [[100, 1, 2]], "inputs_hist": [[55, 2]]},
        {"model": "claude-opus-4", "requests": 1, "input_tokens": 10,
         "outputs": [[8192, 1, 1]], "inputs_hist": [[55, 1]]}]}
    log = tmp_path / "d.jsonl"
    log.write_text("\n".join([
        _line(request_id="req_b", path="/v1/messages/batches", api="anthropic.batches",
              model=None, route="batch", enforced=False,
              batch={"id": "msgbatch_1", "requests": 3, "tokens_reserved": 8422,
                     "summary": summary}),
        _line(request_id="req_u", path="/v1/images/generations", api=None, model=None),
        _line(request_id="req_r", method="GET", path="/v1/messages/batches/msgbatch_1/results",
              api=None, model=None, route="results", batch_settle=[{
                  "id": "msgbatch_1", "mode": "results",
                  "budgets": [{"id": "b", "charged": 8422, "now": 90, "change": -8332}]}]),
    ]) + "\n")
    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\nrules:\n  - id: no-opus\n    when: {model: \"claude-opus-*\"}"
                     "\n    action: deny\n")
    rc, out = run(capsys, "replay", str(log), "--rules", str(rules))
    assert rc == 0
    assert out[:5] == [
        f"replayed 3 request(s) from {log} under {rules}: 2 would change, 1 unchanged",
        "changed (old -> new):",
        "        1  allow/default -> deny/no-opus",
        "        1  allow/default -> deny/unmetered_path",
        "unchanged:",
    ]
    assert "    req_b 2025-01-01T00:00:00.000Z 192.0.2.33 anthropic.batches (3 requests): " \
        "request refused by rule no-opus" in out
    assert ("batches: 1 submission(s), 3 request(s), 8422 token(s) reserved as logged; the "
            "new rules refuse 1 of them (3 request(s)); 1 settlement(s) gave back 8332 "
            "token(s)") in out


def test_check_shows_build_date_and_warns_when_stale(capsys, tmp_path):
    import datetime as dt
    import time

    from .geoip_util import build_city

    old = int(time.time()) - 100 * 86400 - 3600  # 100 days and an hour ago
    db = build_city(tmp_path / "old", build_epoch=old, description="ACME City")
    built = dt.datetime.fromtimestamp(old, dt.UTC).date().isoformat()
    r = tmp_path / "r.yaml"
    r.write_text(f"version: 1\ngeoip:\n  location: {db}\n")
    rc, out = run(capsys, "check", str(r))
    assert (rc, out) == (0, [
        f"{r}:3:3: warning: geoip.location {db} was built {built}, 100 days ago (more than "
        "geoip.max_age_days 45): regional decisions use stale data; update it "
        "(geoip/README.md)",
        f"{r}: ok — 0 rules, 0 clusters, 0 budgets; geoip location {db} (geoip2-city, built "
        f"{built}, verified); 1 warning"])
    r.write_text(f"version: 1\ngeoip:\n  location: {db}\n  max_age_days: 120\n")
    rc, out = run(capsys, "check", str(r))
    assert (rc, out) == (0, [
        f"{r}: ok — 0 rules, 0 clusters, 0 budgets; geoip location {db} (geoip2-city, built "
        f"{built}, verified)"])


def test_explain_shows_the_link_evidence_of_a_request(capsys):
    rc, out = run(capsys, "explain", "--rules", "rules/default.yaml", "--ip", "198.51.100.65",
                  "--key", "sk-test", "--model", "claude-x")
    assert rc == 0
    assert "link      not linked; this request's evidence (flagged network), weight per " \
        "shared value: ip 0.7, prefix 0.3, asn 0.3; threshold 1" in out


async def test_explain_shows_why_a_linked_account_is_linked():
    """Three accounts through one hosting exit (flagged) with one prompt template: the third
    request links them; explain says by which pair and evidence."""
    from hydraguard.authoring import explain
    from hydraguard.authoring.evaluate import Evaluator, RequestSpec
    from hydraguard.policy import load_policy

    ev = Evaluator(load_policy(ROOT / "rules" / "default.yaml"), clock=lambda: 1000.0)
    prompt = "Explain step by step, as an expert would, why the answer to this is 42"
    accounts = []
    try:
        for i in range(3):
            got = await ev.evaluate(RequestSpec(ip="198.51.100.65", key=f"sk-{i}",
                                                prompt=prompt))
            accounts.append(got.facts.account)
    finally:
        await ev.aclose()
    via = accounts[1]  # the most recent account on the exit and template
    assert f"link      linked: cluster of 3 accounts; pair score 1.4 >= 1 from ip x1, " \
        f"template x1 (flagged networks), via account {via}, 0.0 s ago" in \
        explain.render(got).splitlines()
    assert explain.as_json(got)["link"] == {"members": 3, "score": 1.4, "flagged": True,
                                            "kinds": {"ip": 1, "template": 1}, "via": via,
                                            "age_s": 0.0}
