"""Indicator signals through the real proxy: rules built from them deny and throttle, and the
decision log carries exact signal values. The client address comes from X-Forwarded-For sent by
the trusted test peer (127.0.0.1); each test uses its own addresses and keys, so the shared
windows do not mix."""

from __future__ import annotations

import anthropic
import openai
import pytest

from hydraguard_dev.procs import ROOT, proxy, wait_until

pytestmark = pytest.mark.e2e

GEO = ROOT / "geoip"
RULES = f"""
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
geoip:
  location: {GEO / 'demo-city.mmdb'}
  asn: {GEO / 'demo-asn.mmdb'}
  anonymous: {GEO / 'demo-anonymous-ip.mmdb'}
indicators:
  ip:
    hosting_asns: [64510]
    lists: [{{name: tor, path: tor.txt, format: tor}}]
  headers: {{}}
  behaviour: {{window: 600, rate_window: 60}}
  prompts:
    patterns:
      - {{name: cot_elicitation, builtin: cot_elicitation, where: user}}
    templates: {{window: 600, min_chars: 200, text: system}}
rules:
  - id: tor-exits
    when: {{any: [{{signal: ip.tor_exit}}, {{signal: ip.list.tor}}]}}
    action: deny
    reason: "requests through Tor are not accepted"
  - id: account-farm
    when: {{signal: {{name: behaviour.accounts_per_ip, op: ">=", value: 4}}}}
    action: deny
    reason: "too many accounts from this address"
  - id: proxy-score
    when:
      score:
        weights: {{headers.proxy: 2, ip.hosting_asn: 2, ip.hosting: 1}}
        threshold: 4
    action: throttle
    retry_after: 30
    reason: "slow down"
  - id: template-farm
    when:
      all:
        - {{signal: {{name: template.accounts, op: ">=", value: 3}}}}
        - {{signal: prompt.cot_elicitation}}
    action: deny
    reason: "request pattern not accepted"
  - id: cot-watch
    when: {{signal: prompt.cot_elicitation}}
    action: deny
    shadow: true
"""

SYSTEM = ("You are a meticulous tutor for competition mathematics. For every problem you are "
          "given, restate it, list the known quantities, and keep a formal tone. Never skip a "
          "case, never guess, and always double-check arithmetic before the final line. ")
COT = "The answer is 17. Write out your full reasoning step by step that leads to this answer."


@pytest.fixture(scope="module")
def gw(stub, tmp_path_factory):
    d = tmp_path_factory.mktemp("ind")
    (d / "tor.txt").write_text("# test exit list\n203.0.113.5\n")
    (d / "rules.yaml").write_text(RULES)
    with proxy(stub.url, d / "rules.yaml") as p:
        yield p


def ant(gw, ip, key, **headers):
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0,
                               default_headers={"x-forwarded-for": ip, **headers})


def call(gw, ip, key, user="hi", system=None, **headers):
    kw = {"system": system} if system else {}
    return ant(gw, ip, key, **headers).messages.with_raw_response.create(
        model="m", max_tokens=3, messages=[{"role": "user", "content": user}], **kw)


def rec_of(gw, err_or_raw) -> dict:
    resp = getattr(err_or_raw, "response", None) or err_or_raw
    gw.wait_lines(1)
    rid = resp.headers.get("request-id") or resp.headers.get("x-request-id")
    if rid is None or not rid.startswith("req_hg"):  # allowed: the upstream answered
        return gw.lines()[-1]
    return gw.by_request(rid)


def beh(ip_n=1, net=1, ips=1, asns=1, countries=1, rate=1.0, v6=False) -> dict:
    return {"behaviour.accounts_per_ip": ip_n,
            f"behaviour.accounts_per_{'v6_64' if v6 else 'v4_24'}": net,
            "behaviour.ips_per_account": ips, "behaviour.asns_per_account": asns,
            "behaviour.countries_per_account": countries,
            "behaviour.requests_per_account": rate}


def test_tor_exit_denied_by_database_flag_and_by_list(gw, stub):
    before = stub.stats().get("/v1/messages", 0)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        call(gw, "198.51.100.130", "sk-tor-1")
    assert e.value.status_code == 403
    assert e.value.body["error"]["message"] == "requests through Tor are not accepted"
    rec = gw.by_request(e.value.response.headers["request-id"])
    assert (rec["action"], rec["rule"], rec["status"], rec["client_ip"]) == (
        "deny", "tor-exits", 403, "198.51.100.130")
    assert rec["signals"] == {"ip.anonymous": True, "ip.hosting": True, "ip.tor_exit": True,
                              **beh()}
    # an address only the exit list knows (no GeoIP record at all)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        call(gw, "203.0.113.5", "sk-tor-2")
    rec = gw.by_request(e.value.response.headers["request-id"])
    assert (rec["rule"], rec["signals"]) == ("tor-exits", {"ip.list.tor": True, **beh(
        asns=0, countries=0)})
    assert stub.stats().get("/v1/messages", 0) == before  # never reached the upstream


def test_proxy_score_throttles_hosting_with_proxy_headers(gw):
    # hosting network alone (NL, AS64510): score 1 + 2 = 3 < 4, allowed
    raw = call(gw, "2001:db8:400:1::7", "sk-score-1")
    assert raw.http_response.status_code == 200
    rec = gw.lines()[-1]
    assert (rec["action"], rec["rule"], rec["status"]) == ("allow", "default", 200)
    assert rec["signals"] == {"ip.hosting": True, "ip.hosting_asn": True, **beh(v6=True)}
    # the same network with a Via header: 5 >= 4, throttled (OpenAI SDK this time)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-score-2", max_retries=0,
                           default_headers={"x-forwarded-for": "2001:db8:400:2::7",
                                            "via": "1.1 squid-proxy"})
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 429 and e.value.response.headers["retry-after"] == "30"
    assert e.value.code == "rate_limit_exceeded"
    rec = gw.by_request(e.value.response.headers["x-request-id"])
    assert (rec["action"], rec["rule"], rec["status"], rec["upstream_status"]) == (
        "throttle", "proxy-score", 429, None)
    assert rec["signals"] == {"ip.hosting": True, "ip.hosting_asn": True,
                              "headers.proxy": True, "headers.proxy_names": ["via"],
                              **beh(v6=True)}


def test_many_accounts_behind_one_address_denied(gw):
    ip = "192.0.2.3"  # US, AS64496
    for i in range(3):
        raw = call(gw, ip, f"sk-farm-{i}")
        assert raw.http_response.status_code == 200
        assert gw.lines()[-1]["signals"] == beh(ip_n=i + 1, net=i + 1)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        call(gw, ip, "sk-farm-3")
    assert e.value.body["error"]["message"] == "too many accounts from this address"
    rec = gw.by_request(e.value.response.headers["request-id"])
    assert (rec["action"], rec["rule"], rec["status"]) == ("deny", "account-farm", 403)
    assert rec["signals"] == beh(ip_n=4, net=4)
    # a neighbour in the same /24 is not refused (rule is per address); the /24 count shows
    raw = call(gw, "192.0.2.4", "sk-farm-4")
    assert raw.http_response.status_code == 200
    assert gw.lines()[-1]["signals"] == beh(ip_n=1, net=5)


def test_cot_elicitation_matched_shadow_logged(gw):
    raw = call(gw, "2001:db8:2::17", "sk-cot-1", user=COT)  # GB
    assert raw.http_response.status_code == 200
    rec = gw.lines()[-1]
    assert (rec["action"], rec["rule"], rec["shadow"], rec["enforced"], rec["status"]) == (
        "deny", "cot-watch", True, False, 200)
    assert rec["signals"] == {**beh(v6=True), "prompt.cot_elicitation": True}
    assert "full reasoning" not in gw.log_path.read_text()  # no prompt text in the log
    raw = call(gw, "2001:db8:2::18", "sk-cot-2", user="What is 2 + 2?")
    rec = gw.lines()[-1]
    assert (rec["rule"], rec["shadow"], rec["signals"]) == ("default", False,
                                                           beh(net=2, v6=True))


def test_template_shared_by_many_accounts_flagged_then_denied(gw):
    ids = set()
    for i in range(2):
        raw = call(gw, f"2001:db8:3:{i}::1", f"sk-tpl-{i}", user=COT,  # DE, AS64498
                   system=SYSTEM + f"Problem set {i}.")
        assert raw.http_response.status_code == 200
        s = gw.lines()[-1]["signals"]
        ids.add(s.pop("template.id"))
        assert s == {**beh(v6=True), "prompt.cot_elicitation": True,
                     "template.accounts": i + 1}
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        call(gw, "2001:db8:3:2::1", "sk-tpl-2", user=COT, system=SYSTEM + "Problem set 9.")
    rec = gw.by_request(e.value.response.headers["request-id"])
    assert (rec["action"], rec["rule"], rec["status"]) == ("deny", "template-farm", 403)
    s = rec["signals"]
    ids.add(s.pop("template.id"))
    assert len(ids) == 1 and len(ids.pop()) == 18
    assert s == {**beh(v6=True), "prompt.cot_elicitation": True, "template.accounts": 3}
    # the same template without the elicitation is only counted
    raw = call(gw, "2001:db8:3:3::1", "sk-tpl-3", user="Problem: 3x = 12.",
               system=SYSTEM + "Problem set 4.")
    assert raw.http_response.status_code == 200
    assert gw.lines()[-1]["signals"]["template.accounts"] == 4


def test_changed_list_file_is_picked_up_by_the_running_proxy(stub, tmp_path):
    """List files are re-read by the addon's background refresher (a worker thread), not by
    requests: a new version of the file takes effect while the proxy runs."""
    (tmp_path / "tor.txt").write_text("203.0.113.5\n")
    (tmp_path / "rules.yaml").write_text(
        RULES.replace("format: tor}", "format: tor, reload_interval: 1}"))
    with proxy(stub.url, tmp_path / "rules.yaml") as p:
        assert call(p, "203.0.113.77", "sk-list-1").status_code == 200
        new = tmp_path / "tor.new"
        new.write_text("203.0.113.5\n203.0.113.77\n")
        new.replace(tmp_path / "tor.txt")  # atomic, as a list updater would do

        def denied() -> bool:
            try:
                call(p, "203.0.113.77", "sk-list-1")
            except anthropic.PermissionDeniedError as e:
                return e.body["error"]["message"] == "requests through Tor are not accepted"
            return False

        wait_until(denied, 10.0, "the new list version in force")
        rec = p.lines()[-1]
        assert (rec["rule"], rec["signals"]["ip.list.tor"]) == ("tor-exits", True)
