"""`hydraguard replay --budgets`: linking, probation and budgets re-run over a logged day."""

from __future__ import annotations

import json

from hydraguard.authoring.replay import replay
from hydraguard.authoring.replay_budgets import BudgetReplay
from hydraguard.policy import parse_policy

NEW = """
version: 1
clusters:
  - id: account
    key: [cluster]
    link:
      window: 3600
      evidence:
        - {kind: ip, min_accounts: 3, max_accounts: 50}
budgets:
  - id: probation
    when: {signal: ip.residential_proxy}
    probation: {key: [network], min_age: 0, min_requests: 5, min_tokens: 0}
    windows: [{per: hour, tokens: 3000}]
  - id: cluster-tokens
    windows: [{per: hour, tokens: 5000}]
"""


def line(i: int, account: str, ip: str, flagged: bool, tokens: int = 1000) -> str:
    return json.dumps({
        "ts": f"2026-11-30T10:{i // 60:02d}:{i % 60:02d}.000Z", "request_id": f"r{i}",
        "client_ip": ip, "client_ip_source": "x-forwarded-for", "peer_ip": "127.0.0.1",
        "account": account, "method": "POST", "path": "/v1/messages",
        "api": "anthropic.messages", "model": "m", "stream": False, "max_output": 500,
        "input_tokens_est": 500, "action": "allow", "rule": "default", "reason": "",
        "shadow": False, "shadow_rules": [], "enforced": False, "status": 200,
        "upstream_status": 200, "input_tokens": tokens // 2, "output_tokens": tokens // 2,
        "geo": {"found": True, "country": "US", "asn": 64500},
        "signals": {"ip.residential_proxy": True} if flagged else {},
        "cluster": f"account:cluster={account}"})


def test_replay_with_budgets_shows_the_new_clamp_per_cluster():
    # a fleet: 10 accounts, 2 requests each, through 2 flagged exits; one ordinary user
    lines = [line(i, f"acct_{i % 10:020d}", f"198.51.100.{i // 10 + 1}", True)
             for i in range(20)]
    lines += [line(20 + i, "acct_ordinary000000000", "192.0.2.7", False) for i in range(3)]
    policy = parse_policy(NEW, "new.yaml")
    sim = BudgetReplay(policy)
    try:
        rep = replay(lines, policy, budgets=sim)
    finally:
        sim.close()
    assert rep.total == 23
    # probation (3000/hour for all new accounts on residential proxies): 3 requests of
    # 1000 reserved at 500 + 500 fit, later ones are refused; the ordinary user is untouched
    assert rep.changed == {("allow/default", "throttle/probation [budget]"): 17}
    assert sim.by_budget == {"probation": 17}
    (_, row), (_, urow), *_ = sim.top(5)
    # linked by combined evidence (two shared flagged exits) during the second round: the
    # requests before that count under each account's own cluster
    assert len(row.accounts) == 8 and row.requests == 9
    assert (row.refused_before, row.refused_after) == (0, 8)
    assert (row.tokens_before, row.tokens_after) == (9_000, 1_000)
    assert len(row.old_clusters) == 8  # one cluster per account in the old log
    assert (urow.requests, urow.refused_after, urow.tokens_after) == (3, 0, 3_000)


def test_cli_replay_budgets(tmp_path, capsys):
    from hydraguard.cli import main

    log = tmp_path / "d.jsonl"
    log.write_text("\n".join(line(i, f"acct_{i % 10:020d}", f"198.51.100.{i // 10 + 1}", True)
                             for i in range(20)) + "\n")
    rules = tmp_path / "new.yaml"
    rules.write_text(NEW)
    assert main(["replay", str(log), "--rules", str(rules), "--budgets", "--top", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"replayed 20 request(s) from {log} under {rules}: 17 would change, "
                      "3 unchanged")
    assert "clusters under the new linking (top by tokens served as logged):" in out
    assert out[-1] == "budget refusals under the new rules: probation 17"
    assert out[-2].split()[1:] == ["8", "9", "0", "->", "8", "9000", "->", "1000", "8"]
    assert main(["replay", str(log), "--rules", str(rules), "--budgets", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["budget_refusals"] == {"probation": 17} and got["clusters"][0]["accounts"] == 8
