"""End to end: the admin listener of a real `hydraguard run --admin` (mitmdump), with real
requests through the proxy (official SDKs, the stand-in upstream): exact Prometheus counters
read with prometheus_client's own text parser, the cluster view of a scripted hydra,
audit-logged overrides taking effect on the next request, the `hydraguard clusters` table,
the bearer token and the loopback default."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hydraguard.identity import account_id
from hydraguard_dev.procs import DEV_SECRET, ROOT, free_port, proxy, wait_until

pytestmark = pytest.mark.e2e

GEO = ROOT / "geoip"


def acct(key: str) -> str:
    return account_id(DEV_SECRET.encode(), key)


def ant(p, key, ip=None, **headers):
    if ip:
        headers["x-forwarded-for"] = ip
    return anthropic.Anthropic(base_url=p.url, api_key=key, max_retries=0,
                               default_headers=headers)


def call(p, key, model="m-1", n=20, ip=None, **headers):
    return ant(p, key, ip, **headers).messages.create(
        model=model, max_tokens=n, messages=[{"role": "user", "content": "hello there"}])


def scrape(p, token=None) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, parsed by prometheus_client's text parser."""
    status, text = p.admin("GET", "/metrics", token=token)
    assert status == 200, text
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def named(samples, name):
    return {k[1]: v for k, v in samples.items() if k[0] == name}


# -------------------------------------------------------------------------------------------
METRICS_RULES = f"""
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
geoip:
  location: {GEO / 'demo-city.mmdb'}
indicators:
  headers: {{}}
rules:
  - id: banned
    when: {{model: "banned-*"}}
    action: deny
clusters:
  - id: acct
    key: [account]
budgets:
  - id: small
    windows: [{{per: day, tokens: 50}}]
    count: output
"""


def test_metrics_count_known_traffic_exactly(stub, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(METRICS_RULES)
    k1, k2, k3 = (f"sk-m-{uuid.uuid4().hex}" for _ in range(3))
    with proxy(stub.url, rules, admin=True) as p:
        assert call(p, k1, ip="192.0.2.1").usage.output_tokens == 20  # GeoIP found
        call(p, k1, ip="8.8.8.8", via="1.1 squid")  # not in the demo data; a proxy header
        with pytest.raises(anthropic.RateLimitError):
            call(p, k1)  # peer 127.0.0.1 (private): 40 + 20 > 50
        with pytest.raises(anthropic.PermissionDeniedError):
            call(p, k2, model="banned-x", ip="192.0.2.1")
        with pytest.raises(anthropic.InternalServerError):
            call(p, k3, ip="192.0.2.1", **{"x-stub-status": "500"})
        c = openai.OpenAI(base_url=p.url + "/v1", api_key=k3, max_retries=0,
                          default_headers={"x-forwarded-for": "192.0.2.1"})
        c.chat.completions.create(model="m-1", max_tokens=10,
                                  messages=[{"role": "user", "content": "hi"}])
        p.wait_lines(6)
        m = scrape(p)
        assert named(m, "hydraguard_requests_total") == {
            frozenset({"api": "anthropic.messages", "action": "allow", "rule": "default",
                       "stage": "rule"}.items()): 3.0,
            frozenset({"api": "anthropic.messages", "action": "throttle", "rule": "small",
                       "stage": "budget"}.items()): 1.0,
            frozenset({"api": "anthropic.messages", "action": "deny", "rule": "banned",
                       "stage": "rule"}.items()): 1.0,
            frozenset({"api": "openai.chat", "action": "allow", "rule": "default",
                       "stage": "rule"}.items()): 1.0,
        }
        # reserved: 20 + 20 + 20 (the 500) + 10; charged: the 500 gives its 20 back
        assert value(m, "hydraguard_budget_tokens_reserved_total", budget="small") == 70
        assert value(m, "hydraguard_budget_tokens_charged_total", budget="small") == 50
        assert named(m, "hydraguard_refusals_total") == {
            frozenset({"kind": "rate_limit"}.items()): 1.0,
            frozenset({"kind": "permission"}.items()): 1.0}
        assert named(m, "hydraguard_geoip_lookups_total") == {
            frozenset({"result": "found"}.items()): 4.0,
            frozenset({"result": "not_found"}.items()): 1.0,
            frozenset({"result": "private"}.items()): 1.0}
        assert named(m, "hydraguard_geoip_errors_total") == {}
        assert named(m, "hydraguard_signals_total") == {
            frozenset({"signal": "headers.proxy"}.items()): 1.0,
            frozenset({"signal": "headers.proxy_names"}.items()): 1.0}
        assert named(m, "hydraguard_upstream_errors_total") == {
            frozenset({"kind": "http_5xx"}.items()): 1.0}
        assert value(m, "hydraguard_decision_seconds_count") == 6
        assert value(m, "hydraguard_state_up", backend="memory") == 1
        assert value(m, "hydraguard_state_roundtrip_seconds_count", result="ok") is None
        assert value(m, "hydraguard_overrides", kind="deny") == 0
        assert value(m, "hydraguard_reloads_total", result="ok") == 0
        assert value(m, "hydraguard_reloads_total", result="failed") == 0
        assert not any(n.endswith("_created") for n, _ in m)

        # a valid rules change, then a broken one (both replaced atomically)
        for i, text in enumerate((METRICS_RULES + "# changed\n", "version: 1\nrules: [")):
            tmp = tmp_path / f".rules.{i}"
            tmp.write_text(text)
            os.replace(tmp, rules)
            wait_until(lambda i=i: value(scrape(p), "hydraguard_reloads_total",
                                         result="failed" if i else "ok") == 1, 20, "reload")
        m = scrape(p)
        assert (value(m, "hydraguard_reloads_total", result="ok"),
                value(m, "hydraguard_reloads_total", result="failed")) == (1, 1)
        status, health = p.admin("GET", "/healthz")
        assert status == 200 and health["status"] == "degraded"
        assert health["rejected_change"]["errors"]
        assert health["rules"]["reloads"] == 1 and health["state"]["backend"] == "memory"
        assert [d["role"] for d in health["geoip"]] == ["location"]
        assert health["geoip"][0]["build_time"]
        assert health["overrides"] == {"allow": 0, "deny": 0, "detach": 0}


# -------------------------------------------------------------------------------------------
# hydra linking needs combined evidence: the exits are flagged (an IP list: ip.list.exits)
# and the accounts send one prompt template (flagged exit 0.7 + template 0.7 >= 1)
LINKING = """
indicators:
  ip:
    lists: [{name: exits, path: exits.txt}]
  prompts:
    templates: {min_words: 2}
"""
EXITS = "198.51.100.0/24\n"

CLUSTER_RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
""" + LINKING + """
clusters:
  - id: linked
    when: {client_ip: [198.51.100.0/24]}
    key: [cluster]
    link: {window: 600, evidence: [{kind: ip, min_accounts: 3, max_accounts: 100},
                                   {kind: template}]}
  - id: acct
    key: [account]
budgets:
  - id: hydra
    clusters: [linked]
    windows: [{per: day, tokens: 300}]
    count: output
  - id: solo
    clusters: [acct]
    windows: [{per: day, tokens: 30}]
    count: output
"""


def cluster_rules(d: Path) -> Path:
    """CLUSTER_RULES and its exit list in `d`."""
    (d / "exits.txt").write_text(EXITS)
    rules = d / "rules.yaml"
    rules.write_text(CLUSTER_RULES)
    return rules


@pytest.fixture(scope="module")
def admin_proxy(stub, tmp_path_factory):
    d = tmp_path_factory.mktemp("admin")
    rules = cluster_rules(d)
    with proxy(stub.url, rules, admin=True, workdir=d) as p:
        yield p


def hydra(p, exit_ip, n=5):
    """n fresh accounts behind one flagged exit with one prompt template, 20 output tokens
    each: with min_accounts 3 the third links the first three under the first's id (exit
    0.7 + template 0.7); 1 is charged to its own id first."""
    keys = [f"sk-hydra-{uuid.uuid4().hex[:10]}-{i}" for i in range(n)]
    for k in keys:
        call(p, k, ip=exit_ip)
    return keys


def cluster_of(p, key):
    return [r for r in p.lines() if r.get("account") == acct(key)][-1]["cluster"]


def template_of(p, key):
    return [r for r in p.lines() if r.get("account") == acct(key)][-1]["signals"][
        "template.id"]


def test_cluster_view_of_a_scripted_hydra(admin_proxy):
    # the first hydra of the module: its 5 accounts are all the template's accounts
    p = admin_proxy
    keys = hydra(p, "198.51.100.20")
    members = [acct(k) for k in keys]
    cid = "h-" + cluster_of(p, keys[4]).split("h-", 1)[1]
    assert cluster_of(p, keys[0]) == cluster_of(p, keys[4]) == f"linked:cluster={cid}"
    tpl = template_of(p, keys[0])
    assert tpl == template_of(p, keys[4])
    status, top = p.admin("GET", "/clusters?top=10")
    assert status == 200
    mine = [c for c in top["clusters"] if c["id"] == cid]
    assert mine == [{"id": cid, "definition": "linked", "members": 5,
                     "evidence": {"ip": 1, "template": 1}, "tokens": 80, "shared": False,
                     "budgets": [{"id": "hydra", "windows": [{
                         "name": "day", "limit": 300, "used": 80, "remaining": 220,
                         "reset_s": mine[0]["budgets"][0]["windows"][0]["reset_s"]}]}]}]
    status, doc = p.admin("GET", f"/clusters/{cid}")
    assert status == 200 and doc["members"] == members  # first seen first
    assert [(e["kind"], e["value"], e["accounts"], e["linking"]) for e in doc["evidence"]] \
        == [("ip", "198.51.100.20", 5, True), ("template", tpl, 5, True)]
    assert doc["evidence"][0]["first_seen"] <= doc["evidence"][0]["last_seen"]
    assert doc["tokens"] == 80
    status, a = p.admin("GET", f"/accounts/{members[3]}")
    assert status == 200 and a["overrides"] == {}
    (link,) = a["links"]
    assert (link["definition"], link["cluster"], link["size"]) == ("linked", cid, 5)
    assert [(e["kind"], e["value"], e["accounts"], e["linking"]) for e in link["evidence"]] \
        == [("ip", "198.51.100.20", 5, True), ("template", tpl, 5, True)]
    why = link["link"]  # the pair that linked it: the 4th joined through the 3rd
    assert why.pop("age_s") >= 0
    assert why == {"members": 5, "score": 1.4, "kinds": {"ip": 1, "template": 1},
                   "flagged": True, "via": members[2]}
    assert p.admin("GET", "/clusters/h-0000000000000000")[0] == 404
    out = subprocess.run([sys.executable, "-m", "hydraguard", "clusters", "--admin",
                          p.admin_url, "--top", "10"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    header, *rows, footer = out.stdout.splitlines()
    assert header.split() == ["CLUSTER", "DEFINITION", "MEMBERS", "TOKENS", "EVIDENCE",
                              "BUDGETS", "(used/limit)"]
    row = [r for r in rows if r.startswith(cid)]
    assert len(row) == 1 and row[0].split() == [cid, "linked", "5", "80", "ip", "1,",
                                                "template", "1", "hydra:", "day", "80/300"]
    assert footer.endswith("linked clusters") or footer.endswith("linked cluster")


def audit_lines(p):
    path = p.log_path.parent / "admin-audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_unlink_and_split_take_effect_and_are_audited(admin_proxy):
    p = admin_proxy
    keys = hydra(p, "198.51.100.30")
    members = [acct(k) for k in keys]
    cid = cluster_of(p, keys[4]).split("=", 1)[1]
    status, got = p.admin("POST", f"/accounts/{members[4]}/unlink", {"ttl": 600},
                          headers={"X-Hydraguard-Operator": "alice"})
    assert status == 200 and got["action"] == "unlink" and got["ttl"] == 600
    call(p, keys[4], ip="198.51.100.30")
    assert cluster_of(p, keys[4]) == f"linked:cluster={acct_cluster(members[4])}"
    status, doc = p.admin("GET", f"/clusters/{cid}")
    assert doc["members"] == members[:4]
    status, a = p.admin("GET", f"/accounts/{members[4]}")
    assert a["overrides"]["detach"]["by"] == "peer:127.0.0.1"
    assert (a["links"][0]["cluster"], a["links"][0]["size"]) == (acct_cluster(members[4]), 1)
    status, got = p.admin("POST", f"/clusters/{cid}/split", {"ttl": 300, "note": "office"})
    assert status == 200 and got["members"] == members[:4]
    call(p, keys[2], ip="198.51.100.30")
    assert cluster_of(p, keys[2]) == f"linked:cluster={acct_cluster(members[2])}"
    assert p.admin("GET", f"/clusters/{cid}")[0] == 404
    assert cid not in [c["id"] for c in p.admin("GET", "/clusters?top=100")[1]["clusters"]]
    mine = [e for e in audit_lines(p) if e.get("account") == members[4]
            or e.get("cluster") == cid]
    assert [(e["action"], e["who"], e.get("operator"), e["result"]) for e in mine] == [
        ("unlink", "peer:127.0.0.1", "alice", "ok"), ("split", "peer:127.0.0.1", None, "ok")]
    assert mine[1]["members"] == members[:4] and mine[1]["note"] == "office"
    assert "hydraguard admin: split" in p.stderr()


def acct_cluster(account):
    from hydraguard.clusters.keys import cluster_id

    return cluster_id(account)


def test_deny_and_allow_overrides(admin_proxy):
    p = admin_proxy
    k = f"sk-ovr-{uuid.uuid4().hex}"
    a = acct(k)
    assert call(p, k, n=20).usage.output_tokens == 20
    with pytest.raises(anthropic.RateLimitError):
        call(p, k, n=20)  # solo: 20 + 20 > 30
    assert p.admin("POST", f"/accounts/{a}/allow", {})[0] == 400  # ttl is required
    assert p.admin("POST", f"/accounts/{a}/allow", {"ttl": -1})[0] == 400
    status, _ = p.admin("POST", f"/accounts/{a}/allow", {"ttl": 600})
    assert status == 200
    assert call(p, k, n=25).usage.output_tokens == 25  # no budget for an allowed account
    rec = p.by_request([r for r in p.lines() if r["account"] == a][-1]["request_id"])
    assert rec["override"] == "allow" and "budget" not in rec and rec["status"] == 200
    assert p.admin("POST", f"/accounts/{a}/deny", {"ttl": 600})[0] == 200
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        call(p, k)  # deny wins over allow
    assert e.value.body["error"]["message"] == "this account is blocked by the operator"
    rec = [r for r in p.lines() if r["account"] == a][-1]
    assert (rec["rule"], rec["action"], rec["override"], rec["status"]) == (
        "admin_deny", "deny", "deny", 403)
    status, ov = p.admin("GET", "/overrides")
    assert {(o["kind"], o["account"]) for o in ov["overrides"]} >= {("allow", a), ("deny", a)}
    assert p.admin("DELETE", f"/accounts/{a}/deny")[0] == 200
    assert p.admin("DELETE", f"/accounts/{a}/deny")[0] == 404
    assert call(p, k, n=5).usage.output_tokens == 5
    acts = [(e["action"], e["result"]) for e in audit_lines(p) if e.get("account") == a]
    assert acts == [("allow", "ok"), ("deny", "ok"), ("lift-deny", "ok"),
                    ("lift-deny", "none in force")]


def test_requests_the_listener_refuses(admin_proxy):
    p = admin_proxy
    req = httpx.post(p.admin_url + "/accounts/acct_x/deny", content=b'{"ttl": 5}',
                     headers={"content-type": "text/plain"})
    assert req.status_code == 415  # a cross-origin form cannot send JSON without preflight
    assert p.admin("GET", "/nope")[0] == 404
    assert p.admin("GET", "/accounts/bad%20id")[0] == 400
    r = httpx.get(p.admin_url + "/metrics", headers={"host": "evil.example"})
    assert r.status_code == 403  # DNS rebinding: only loopback names without a token
    assert p.admin("GET", "/clusters?top=x")[0] == 400


def test_bearer_token_required_and_audited(stub, tmp_path):
    rules = cluster_rules(tmp_path)
    token = "t-" + uuid.uuid4().hex
    with proxy(stub.url, rules, admin=True, env={"HYDRAGUARD_ADMIN_TOKEN": token}) as p:
        status, body = p.admin("GET", "/metrics")
        assert status == 401 and body["error"] == "a valid bearer token is required"
        assert p.admin("GET", "/metrics", token="wrong")[0] == 401
        r = httpx.get(p.admin_url + "/healthz")
        assert r.headers["www-authenticate"] == 'Bearer realm="hydraguard-admin"'
        assert p.admin("GET", "/metrics", token=token)[0] == 200
        assert p.admin("POST", "/accounts/acct_1/deny", {"ttl": 60})[0] == 401
        assert p.admin("POST", "/accounts/acct_1/deny", {"ttl": 60}, token=token)[0] == 200
        (entry,) = audit_lines(p)
        tid = "token:" + hashlib.sha256(token.encode()).hexdigest()[:8]
        assert (entry["who"], entry["action"], entry["account"], entry["result"]) == (
            tid, "deny", "acct_1", "ok")
        assert token not in p.stderr() and token not in json.dumps(entry)
        env = {**os.environ, "HYDRAGUARD_ADMIN_TOKEN": ""}
        out = subprocess.run([sys.executable, "-m", "hydraguard", "clusters", "--admin",
                              p.admin_url], capture_output=True, text=True, timeout=60,
                             env=env, cwd=ROOT)
        assert out.returncode == 2 and "401 a valid bearer token is required" in out.stderr
        env["HYDRAGUARD_ADMIN_TOKEN"] = token
        out = subprocess.run([sys.executable, "-m", "hydraguard", "clusters", "--admin",
                              p.admin_url, "--json"], capture_output=True, text=True,
                             timeout=60, env=env, cwd=ROOT)
        assert out.returncode == 0 and json.loads(out.stdout)["clusters"] == []


def _listen_addr(port: int) -> str | None:
    """The local address a TCP socket listens on at `port` (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hexport = local.split(":")
        if state == "0A" and int(hexport, 16) == port:
            return ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return None


def test_admin_port_alone_listens_on_loopback(stub, tmp_path):
    rules = cluster_rules(tmp_path)
    port = free_port()
    with proxy(stub.url, rules, extra=["--admin", str(port)]) as p:
        wait_until(lambda: _listen_addr(port) is not None, 20, "admin listener")
        assert _listen_addr(port) == "127.0.0.1"
        assert f"admin listener on http://127.0.0.1:{port} (loopback, no token" in p.stderr()


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hydraguard", "run", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "HYDRAGUARD_ADMIN_TOKEN": "", **(env or {})})


def test_admin_address_errors_stop_run(stub):
    port = free_port()
    out = _run("--upstream", stub.url, "--listen", str(port), "--admin", f"0.0.0.0:{port + 1}")
    assert out.returncode == 2
    assert out.stderr.strip() == (f"hydraguard: --admin 0.0.0.0:{port + 1} listens beyond "
                                  "loopback: set HYDRAGUARD_ADMIN_TOKEN (the bearer token the "
                                  "admin listener will require)")
    out = _run("--upstream", stub.url, "--listen", str(port), "--admin", f"127.0.0.1:{port}")
    assert out.returncode == 2
    assert out.stderr.strip() == (f"hydraguard: --admin 127.0.0.1:{port}: the admin listener "
                                  f"never shares the proxy's port {port}: choose another")
    out = _run("--upstream", stub.url, "--listen", str(port), "--admin", "nope")
    assert out.returncode == 2 and "--admin wants PORT or HOST:PORT" in out.stderr
