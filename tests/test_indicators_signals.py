"""Signals through the Gateway (no proxy): exact signal dicts for each indicator, a fake clock
for windows and list reloads, and property tests that observe never raises."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy.tls import ClientHello

from hydraguard.pipeline import Gateway, RequestView, header_getter
from hydraguard.policy import parse_policy
from hydraguard.signals.collect import SignalCollector, possible_signals
from hydraguard.signals.ja4 import ja4_from_raw

ROOT = Path(__file__).resolve().parents[1]
GEO = ROOT / "geoip"
LISTS = ROOT / "rules" / "lists"

BASE = f"""
version: 1
settings:
  trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]
geoip:
  location: {GEO / 'demo-city.mmdb'}
  asn: {GEO / 'demo-asn.mmdb'}
  anonymous: {GEO / 'demo-anonymous-ip.mmdb'}
"""

ALL = BASE + f"""
indicators:
  ip:
    hosting_asns: [64510, AS65536]
    proxy_asns: [65551]
    lists:
      - {{name: tor, path: {LISTS / 'tor-exit-addresses.txt'}, format: tor}}
      - {{name: tor2, path: {LISTS / 'tor-exit-addresses-detailed.txt'}, format: tor}}
      - {{name: aws, path: {LISTS / 'aws-ip-ranges.json'}, format: aws}}
      - {{name: gcp, path: {LISTS / 'gcp-cloud.json'}, format: gcp}}
      - {{name: proxies, path: {LISTS / 'proxy-networks.txt'}}}
  headers: {{}}
  tls:
    sdk_fingerprints:
      python: [t13d1812h2_85036bcba153]
      node: [t13d1516h2_8daaf6152771_e5627efa2ab1, t13d1517h2]
  behaviour: {{window: 100, rate_window: 10}}
  prompts:
    patterns:
      - {{name: cot_elicitation, builtin: cot_elicitation}}
      - {{name: sys_only, phrase: "You are a Teacher", where: system}}
      - {{name: shout, regex: 'REVEAL\\s+(?:THE|YOUR)\\s+CHAIN', where: user, gate: [reveal]}}
    templates: {{window: 100}}
"""

FILLER = ("You are a careful assistant for the Acme support desk. Answer questions about "
          "orders, invoices, shipping and refunds, cite the policy section you rely on, keep a "
          "formal tone and never speculate about facts you do not know. ")


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def gateway(text: str, tmp_path: Path, clock: Clock | None = None) -> Gateway:
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    policy = parse_policy(text, str(rules))
    return Gateway(policy, log_path=str(tmp_path / "log.jsonl"), secret=b"test",
                   clock=clock or Clock())


def view(ip: str | None = None, key: str | None = "sk-1", *, peer: str = "127.0.0.1",
         path: str = "/v1/messages", system: str | None = None, user: str = "hi",
         headers: dict[str, str] | None = None, ja4: str | None = None) -> RequestView:
    h = {"content-type": "application/json", **(headers or {})}
    if ip:
        h["x-forwarded-for"] = ip
    if key:
        h["x-api-key"] = key
    body: dict = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": user}]}
    if system is not None:
        body["system"] = system
    return RequestView("POST", path, peer, header_getter(h), json.dumps(body).encode(),
                       tls_ja4=ja4)


@pytest.fixture
def gw_all(tmp_path):
    g = gateway(ALL, tmp_path)
    yield g
    g.close()


def beh(ip_n: int = 1, net: str = "v4_24", net_n: int = 1, ips: int = 1, asns: int = 1,
        countries: int = 1, rate: float = 1.0) -> dict:
    return {"behaviour.accounts_per_ip": ip_n, f"behaviour.accounts_per_{net}": net_n,
            "behaviour.ips_per_account": ips, "behaviour.asns_per_account": asns,
            "behaviour.countries_per_account": countries,
            "behaviour.requests_per_account": rate}


# --- no section / switched off --------------------------------------------------------------

def test_no_indicators_section_no_signals(tmp_path):
    g = gateway(BASE, tmp_path)
    assert g.policy.indicators is None
    assert g.gather(view("198.51.100.129", headers={"via": "1.1 x"}, ja4="t13d")).signals == {}
    assert g.signals.client_hello(object()) is None


def test_every_subsection_switched_off(tmp_path):
    text = BASE + """
indicators:
  ip: {enabled: false, hosting_asns: [64510]}
  headers: {enabled: false}
  tls: {enabled: false}
  behaviour: {enabled: false}
  prompts: {enabled: false, patterns: [{name: a, phrase: hi}]}
"""
    g = gateway(text, tmp_path)
    assert g.signals._steps == ()
    f = g.gather(view("198.51.100.129", headers={"via": "1.1 x"}, ja4="t13d", user="hi"))
    assert f.signals == {}


# --- ip --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ip,expected", [
    ("198.51.100.129", {"ip.anonymous": True, "ip.hosting": True, "ip.tor_exit": True,
                        "ip.list.tor": True}),
    ("198.51.100.141", {"ip.anonymous": True, "ip.hosting": True, "ip.tor_exit": True,
                        "ip.list.tor2": True}),
    ("198.51.100.161", {"ip.anonymous": True, "ip.anonymous_vpn": True, "ip.hosting": True,
                        "ip.anonymizer_confidence": 99, "ip.hosting_asn": True}),
    ("198.51.100.100", {"ip.anonymous": True, "ip.residential_proxy": True,
                        "ip.anonymizer_confidence": 85, "ip.list.proxies": True}),
    ("198.51.100.145", {"ip.anonymous": True, "ip.public_proxy": True, "ip.proxy_asn": True,
                        "ip.list.proxies": True}),
    ("198.51.100.65", {"ip.hosting": True, "ip.hosting_asn": True, "ip.list.aws": True}),
    ("198.51.100.225", {"ip.hosting": True, "ip.hosting_asn": True, "ip.list.gcp": True}),
    ("2001:db8:400::5", {"ip.hosting": True, "ip.hosting_asn": True, "ip.list.aws": True}),
    ("2001:db8:401::5", {"ip.list.gcp": True}),
    ("2001:db8:500::1", {"ip.anonymous": True, "ip.hosting": True, "ip.tor_exit": True,
                         "ip.list.tor": True}),
    ("192.0.2.1", {}),
])
def test_ip_signals(gw_all, ip, expected):
    # key=None: no behaviour signals; no proxy headers from the trusted peer
    assert gw_all.gather(view(ip, key=None)).signals == expected


def test_ip_anonymous_off_keeps_asn_and_lists(tmp_path):
    text = BASE + f"""
indicators:
  ip:
    anonymous: false
    hosting_asns: [64511]
    lists: [{{name: tor, path: {LISTS / 'tor-exit-addresses.txt'}, format: tor}}]
"""
    g = gateway(text, tmp_path)
    assert g.gather(view("198.51.100.129")).signals == {"ip.hosting_asn": True,
                                                         "ip.list.tor": True}


def test_files_in_background_requests_never_reload_refresh_files_does(tmp_path):
    """As in the proxy: requests only read the loaded versions; `refresh_files` (run by the
    addon in a worker thread) re-reads list files and GeoIP databases that changed."""
    clock = Clock()
    lst = tmp_path / "bad.txt"
    lst.write_text("192.0.2.1\n")
    city = tmp_path / "city.mmdb"
    city.write_bytes((GEO / "demo-city.mmdb").read_bytes())
    text = f"""
version: 1
settings: {{trusted_proxies: [127.0.0.1/32]}}
geoip: {{location: {city}, reload_interval: 30}}
indicators:
  ip:
    lists: [{{name: bad, path: bad.txt, reload_interval: 30}}]
"""
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    g = Gateway(parse_policy(text, str(rules)), log_path=str(tmp_path / "log.jsonl"),
                secret=b"test", clock=clock, files_in_background=True)
    g.geo._clock, g.geo._next_check = clock, clock.t + 30  # GeoIP on the test clock too
    try:
        assert g.gather(view("192.0.2.2")).signals == {}
        lst.write_text("192.0.2.0/30\n")
        os.utime(lst, ns=(1, 1))
        broken = tmp_path / "city.new"
        broken.write_bytes(b"not a MaxMind database" * 10)
        broken.replace(city)  # a broken new version, swapped in atomically
        clock.t += 31
        assert g.gather(view("192.0.2.2")).signals == {}  # requests did not look
        assert g.geo.describe()[0]["error"] is None
        g.refresh_files()
        assert g.gather(view("192.0.2.2")).signals == {"ip.list.bad": True}
        assert g.geo.describe()[0]["error"]  # the refresher saw the bad database...
        assert g.gather(view("192.0.2.1")).geo.country == "US"  # ...and kept the old one
    finally:
        g.close()


def test_ip_list_reloaded_on_change_with_relative_path(tmp_path):
    clock = Clock()
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "bad.txt"
    lst.write_text("192.0.2.1\n")
    text = """
version: 1
settings: {trusted_proxies: [127.0.0.1/32]}
indicators:
  ip:
    lists: [{name: bad, path: lists/bad.txt, reload_interval: 30}]
"""
    g = gateway(text, tmp_path, clock)
    assert g.gather(view("192.0.2.1")).signals == {"ip.list.bad": True}
    assert g.gather(view("192.0.2.2")).signals == {}
    lst.write_text("192.0.2.0/30  # widened\n")
    os.utime(lst, ns=(1, 1))  # a different mtime even on coarse file systems
    clock.t += 10  # before the reload interval: the old list still answers
    assert g.gather(view("192.0.2.2")).signals == {}
    clock.t += 30
    assert g.gather(view("192.0.2.2")).signals == {"ip.list.bad": True}
    lst.write_text("not an address\n")  # an invalid version keeps the previous list
    clock.t += 31
    assert g.gather(view("192.0.2.3")).signals == {"ip.list.bad": True}


def test_ip_signals_need_a_client_ip(tmp_path):
    g = gateway(ALL, tmp_path)
    ind = g.signals
    from hydraguard.facts import Facts

    f = Facts("r", "POST", "/v1/messages", None, None)
    assert ind.observe(f, view(None, key=None), None) == {}


# --- headers ---------------------------------------------------------------------------------

def headers_gw(tmp_path, extra: str = "") -> Gateway:
    return gateway(BASE + "indicators:\n  headers: {" + extra + "}\n", tmp_path)


@pytest.mark.parametrize("peer,headers,expected", [
    # untrusted peer: forwarding headers are themselves indicators
    ("192.0.2.9", {"x-forwarded-for": "203.0.113.7", "via": "1.1 squid"},
     ["via", "x-forwarded-for"]),
    ("192.0.2.9", {"Forwarded": "for=203.0.113.7", "X-Real-IP": "203.0.113.7",
                   "Proxy-Connection": "keep-alive", "X-Proxy-ID": "77"},
     ["forwarded", "proxy-connection", "x-proxy-id", "x-real-ip"]),
    # trusted peer with a one-hop chain: expected, not an indicator
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, None),
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.7, 10.1.2.3", "x-real-ip": "1.2.3.4"}, None),
    # trusted peer, but the chain has hops left of the client: the client (or its proxy) sent
    ("127.0.0.1", {"x-forwarded-for": "192.0.2.5, 203.0.113.7, 10.1.2.3"},
     ["x-forwarded-for"]),
    ("127.0.0.1", {"forwarded": 'for="[2001:db8::1]";proto=https, for=203.0.113.7'},
     ["forwarded"]),
    ("127.0.0.1", {"via": "1.1 squid", "proxy-agent": "x"}, ["proxy-agent", "via"]),
    ("192.0.2.9", {"user-agent": "curl/8", "accept": "*/*"}, None),
])
def test_header_signals(tmp_path, peer, headers, expected):
    g = headers_gw(tmp_path)
    want = {"headers.proxy": True, "headers.proxy_names": expected} if expected else {}
    assert g.gather(view(None, peer=peer, headers=headers)).signals == want


def test_header_ignore_list(tmp_path):
    g = headers_gw(tmp_path, "ignore: [via, X-Forwarded-For]")
    v = view(None, peer="192.0.2.9", headers={"via": "1.1 cdn", "x-forwarded-for": "1.2.3.4"})
    assert g.gather(v).signals == {}
    v = view(None, peer="192.0.2.9", headers={"via": "1.1 cdn", "x-real-ip": "1.2.3.4"})
    assert g.gather(v).signals == {"headers.proxy": True, "headers.proxy_names": ["x-real-ip"]}


# --- tls -------------------------------------------------------------------------------------

def _python_hello() -> bytes:
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="api.example.com")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_client_hello_ja4_matches_raw_computation(gw_all):
    record = _python_hello()
    got = gw_all.signals.client_hello(ClientHello(record[9:]))
    assert got == ja4_from_raw(record) and got.startswith("t13d")
    assert gw_all.signals.client_hello(object()) is None  # never raises


def test_client_hello_off_without_tls(tmp_path):
    g = headers_gw(tmp_path)
    assert g.signals.client_hello(ClientHello(_python_hello()[9:])) is None


NODE_JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"
PY_JA4 = "t13d1812h2_85036bcba153_d41ae481755e"


def tls_gw(tmp_path, clock=None) -> Gateway:
    return gateway(BASE + """
indicators:
  tls:
    window: 60
    max_keys: 3
    sdk_fingerprints:
      python: [t13d1812h2_85036bcba153]
      node: [t13d1516h2_8daaf6152771_e5627efa2ab1, t13d1517h2]
""", tmp_path, clock)


def test_tls_signals_accounts_and_sdk_claims(tmp_path):
    clock = Clock()
    g = tls_gw(tmp_path, clock)
    py = {"x-stainless-lang": "python", "user-agent": "Anthropic/Python 0.40.0"}
    node = {"x-stainless-lang": "js", "x-stainless-runtime": "node"}
    assert g.gather(view(key="a", headers=py, ja4=PY_JA4)).signals == {
        "tls.ja4": PY_JA4, "tls.ja4_accounts": 1, "tls.claimed_runtime": "python"}
    # a python TLS stack claiming to be the node SDK
    assert g.gather(view(key="b", headers=node, ja4=PY_JA4)).signals == {
        "tls.ja4": PY_JA4, "tls.ja4_accounts": 2, "tls.claimed_runtime": "node",
        "tls.sdk_mismatch": True}
    assert g.gather(view(key="c", headers=node, ja4=NODE_JA4)).signals == {
        "tls.ja4": NODE_JA4, "tls.ja4_accounts": 1, "tls.claimed_runtime": "node"}
    # a runtime not in the table is not judged; no claim at all gives no claim signal
    assert g.gather(view(key="d", headers={"user-agent": "curl/8.0"}, ja4=PY_JA4)).signals == {
        "tls.ja4": PY_JA4, "tls.ja4_accounts": 3, "tls.claimed_runtime": "curl"}
    assert g.gather(view(key="a", ja4=PY_JA4)).signals == {"tls.ja4": PY_JA4,
                                                           "tls.ja4_accounts": 3}
    # without an account the count is read, not added to
    assert g.gather(view(key=None, ja4=PY_JA4)).signals == {"tls.ja4": PY_JA4,
                                                            "tls.ja4_accounts": 3}
    # plain-HTTP clients get no tls signals
    assert g.gather(view(key="a", headers=node)).signals == {}
    clock.t += 61  # window over
    assert g.gather(view(key="e", ja4=PY_JA4)).signals == {"tls.ja4": PY_JA4,
                                                           "tls.ja4_accounts": 1}


def test_tls_fingerprints_bounded(tmp_path):
    g = tls_gw(tmp_path)
    for i in range(10):
        g.gather(view(key=f"k{i}", ja4=f"t13d0{i}00h2_000000000000_000000000000"))
    assert len(g.signals.ja4_accounts) == 3


# --- behaviour -------------------------------------------------------------------------------

def beh_gw(tmp_path, clock) -> Gateway:
    return gateway(BASE + """
indicators:
  behaviour: {window: 100, rate_window: 10, max_keys: 50, max_members_per_key: 5}
""", tmp_path, clock)


def test_behaviour_accounts_per_ip_net_and_expiry(tmp_path):
    clock = Clock(1000.0)
    g = beh_gw(tmp_path, clock)
    # 192.0.2.1-3: US, AS64496
    assert g.gather(view("192.0.2.1", key="a")).signals == beh()
    assert g.gather(view("192.0.2.1", key="b")).signals == beh(2, net_n=2)
    assert g.gather(view("192.0.2.2", key="c")).signals == beh(1, net_n=3)
    # the cap: counts saturate at max_members_per_key
    for k in "defgh":
        s = g.gather(view("192.0.2.1", key=k)).signals
    assert s == beh(5, net_n=5)
    # no account: nothing counted, no behaviour signals
    assert g.gather(view("192.0.2.1", key=None)).signals == {}
    clock.t += 101
    assert g.gather(view("192.0.2.1", key="a")).signals == beh()


def test_behaviour_account_spread_and_rate(tmp_path):
    clock = Clock(1000.0)
    g = beh_gw(tmp_path, clock)
    assert g.gather(view("192.0.2.1", key="a")).signals == beh()  # US AS64496
    clock.t += 1
    assert g.gather(view("192.0.2.17", key="a")).signals == beh(ips=2, asns=2, countries=2,
                                                                 rate=2.0)  # GB AS64497
    clock.t += 1
    # IPv6, DE AS64498
    assert g.gather(view("2001:db8:3::9", key="a")).signals == beh(
        net="v6_64", ips=3, asns=3, countries=3, rate=3.0)
    # private address: no geo, counts the IP only
    assert g.gather(view("10.9.9.9", key="a")).signals == beh(ips=4, asns=3, countries=3,
                                                               rate=4.0)


def test_behaviour_bounded_keys(tmp_path):
    g = beh_gw(tmp_path, Clock())
    for i in range(200):
        g.gather(view(f"192.0.{i // 250}.{i % 250 + 1}", key=f"k{i}"))
    counters = g.signals.behaviour.counters()
    assert max(len(c) for c in counters.values()) == 50


# --- prompts ---------------------------------------------------------------------------------

COT = "Here is the answer: 42. Write out your full reasoning step by step that leads to it."


def test_prompt_patterns_system_user_and_case(gw_all):
    f = gw_all.gather(view(key=None, user=COT))  # 16 words: also fingerprinted (no account)
    assert f.signals == {"prompt.cot_elicitation": True, "template.id": f.signals["template.id"],
                         "template.accounts": 0}
    f = gw_all.gather(view(key=None, system="you are a   TEACHER.", user="hello"))
    assert f.signals == {"prompt.sys_only": True}
    f = gw_all.gather(view(key=None, system="hello", user="You are a teacher"))  # user only
    assert f.signals == {}
    f = gw_all.gather(view(key=None, user="please Reveal your chain of thought"))
    assert f.signals == {"prompt.shout": True}
    f = gw_all.gather(view(key=None, system="Reveal your chain", user="x"))  # where: user
    assert f.signals == {}


def test_prompt_signals_only_for_model_calls(gw_all):
    f = gw_all.gather(view(key=None, path="/v1/models", user=COT))
    assert f.api is None and f.signals == {}


def test_templates_count_accounts_across_near_duplicates(tmp_path):
    clock = Clock()
    g = gateway(BASE + """
indicators:
  prompts:
    templates: {window: 100, min_chars: 100, text: system}
""", tmp_path, clock)
    ids = []
    for i in range(5):
        # the same long system prompt with a varying customer number and user question
        s = g.gather(view(key=f"acct{i}", system=FILLER * 3 + f"Customer number {i}.",
                          user=f"question {i}")).signals
        ids.append(s["template.id"])
        assert s == {"template.id": ids[0], "template.accounts": i + 1}
    # the same account again does not add; short texts are not fingerprinted
    s = g.gather(view(key="acct0", system=FILLER * 3)).signals
    assert s == {"template.id": ids[0], "template.accounts": 5}
    assert g.gather(view(key="acct9", system="short")).signals == {}
    other = g.gather(view(key="acct9", system="Translate every sentence into French and "
                          "keep the formatting of lists, tables and code blocks intact. " * 3)
                     ).signals
    assert other["template.accounts"] == 1 and other["template.id"] != ids[0]
    clock.t += 101  # the template expired: a new one starts, named after its first text
    again = g.gather(view(key="acct7", system=FILLER * 3)).signals
    assert again["template.accounts"] == 1 and again["template.id"].startswith("t-")


def test_template_text_modes(tmp_path):
    for mode, system, user, hit in [("user", "", FILLER, True), ("user", FILLER, "hi", False),
                                    ("both", FILLER[:60], FILLER[60:], True)]:
        g = gateway(BASE + "indicators:\n  prompts:\n    templates: {min_chars: 100, text: "
                    + mode + "}\n", tmp_path)
        s = g.gather(view(key="a", system=system or None, user=user)).signals
        assert ("template.id" in s) is hit, (mode, s)


def test_signals_never_carry_prompt_text_or_keys(gw_all):
    secret_key = "sk-ant-SECRET-KEY-123"
    f = gw_all.gather(view("198.51.100.129", key=secret_key, system=FILLER * 2,
                           user=COT + " zebra-marker", ja4=PY_JA4,
                           headers={"via": "1.1 p", "x-stainless-lang": "python"}))
    dump = json.dumps(f.signals)
    assert secret_key not in dump and "zebra" not in dump and "Acme" not in dump
    assert set(f.signals) == {
        "ip.anonymous", "ip.hosting", "ip.tor_exit", "ip.list.tor", "headers.proxy",
        "headers.proxy_names", "tls.ja4", "tls.ja4_accounts", "tls.claimed_runtime",
        "behaviour.accounts_per_ip", "behaviour.accounts_per_v4_24",
        "behaviour.ips_per_account", "behaviour.asns_per_account",
        "behaviour.countries_per_account", "behaviour.requests_per_account",
        "prompt.cot_elicitation", "template.id", "template.accounts"}


# --- robustness ------------------------------------------------------------------------------

_HEADER_NAMES = st.sampled_from(["via", "x-forwarded-for", "forwarded", "x-real-ip",
                                 "proxy-connection", "user-agent", "x-stainless-lang",
                                 "x-stainless-runtime", "x-api-key", "authorization"])


@pytest.fixture(scope="module")
def gw_module(tmp_path_factory):
    g = gateway(ALL, tmp_path_factory.mktemp("prop"))
    yield g
    g.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.dictionaries(_HEADER_NAMES, st.text(max_size=80), max_size=8),
       peer=st.sampled_from(["127.0.0.1", "192.0.2.9", "::1", "garbage", None]),
       body=st.one_of(st.binary(max_size=200),
                      st.text(max_size=300).map(lambda t: json.dumps(
                          {"model": "m", "system": t, "messages": [
                              {"role": "user", "content": t}]}).encode())),
       ja4=st.one_of(st.none(), st.text(max_size=40)))
def test_observe_never_raises_and_signals_are_json(gw_module, headers, peer, body, ja4):
    v = RequestView("POST", "/v1/messages", peer, header_getter(headers), body, tls_ja4=ja4)
    f = gw_module.gather(v)
    names = f.signals.get("headers.proxy_names", [])
    assert names == sorted(set(names))
    json.dumps(f.signals)
    for k in f.signals:
        assert k.split(".", 1)[0] in ("ip", "headers", "tls", "behaviour", "prompt",
                                      "template", "geo")


def test_broken_indicator_is_logged_not_raised(gw_all, caplog, monkeypatch):
    ind: SignalCollector = gw_all.signals

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(ind.behaviour, "update", boom)
    f = gw_all.gather(view("198.51.100.65", user=COT))
    assert f.signals == {"ip.hosting": True, "ip.hosting_asn": True, "ip.list.aws": True,
                         "prompt.cot_elicitation": True, "template.id": f.signals["template.id"],
                         "template.accounts": 1}
    assert "indicator _behaviour failed" in caplog.text
    ind.close()
    assert gw_all.gather(view("198.51.100.65")).signals == {}


# --- hot reload ------------------------------------------------------------------------------

def test_successor_adopts_unchanged_windows(tmp_path):
    clock = Clock()
    g = gateway(ALL, tmp_path, clock)
    g.gather(view("192.0.2.1", key="a", ja4=PY_JA4, user=FILLER * 2))
    g.gather(view("192.0.2.1", key="b", ja4=PY_JA4, user=FILLER * 2))
    # an unrelated edit (a rule added): every window carries over
    new = g.successor(parse_policy(ALL + "rules: [{id: x, action: allow}]\n",
                                   str(tmp_path / "rules.yaml")))
    s = new.gather(view("192.0.2.1", key="c", ja4=PY_JA4, user=FILLER * 2)).signals
    assert (s["behaviour.accounts_per_ip"], s["tls.ja4_accounts"], s["template.accounts"]) == (
        3, 3, 3)
    assert new.signals.lists["tor"] is g.signals.lists["tor"]
    # changed behaviour settings start that window empty; the others still carry over
    newer = new.successor(parse_policy(ALL.replace("window: 100, rate_window: 10",
                                                   "window: 200, rate_window: 10"),
                                       str(tmp_path / "rules.yaml")))
    s = newer.gather(view("192.0.2.1", key="d", ja4=PY_JA4, user=FILLER * 2)).signals
    assert (s["behaviour.accounts_per_ip"], s["tls.ja4_accounts"], s["template.accounts"]) == (
        1, 4, 4)


def test_header_names_fast_path_agrees(tmp_path):
    """A request view that lists its header names (lower case) skips the per-name lookups."""
    import ipaddress
    from types import SimpleNamespace

    from hydraguard.facts import Facts

    g = headers_gw(tmp_path)
    h = {"via": "1.1 squid", "x-forwarded-for": "203.0.113.7", "accept": "*/*"}
    slow = g.gather(view(None, peer="192.0.2.9", headers=h)).signals
    fast_view = SimpleNamespace(headers=lambda name: None, header_names=frozenset(h),
                                tls_ja4=None)
    f = Facts("r", "POST", "/v1/messages", ipaddress.ip_address("192.0.2.9"), None)
    assert g.signals.observe(f, fast_view, None) == slow == {"headers.proxy": True,
                                 "headers.proxy_names": ["via", "x-forwarded-for"]}


def test_possible_signals_covers_every_signal_set(gw_all):
    """`possible_signals` (what `hydraguard check` warns against) lists every name the
    indicators and the pipeline set: a new signal must be added there too."""
    known = possible_signals(gw_all.policy.indicators)
    seen: set[str] = set()
    ips = ["198.51.100.130", "198.51.100.161", "198.51.100.100", "198.51.100.145",
           "198.51.100.65", "198.51.100.225", "2001:db8:400::5", "2001:db8:401::5",
           "2001:db8:500::1", "192.0.2.1", "192.0.2.81"]
    for i, ip in enumerate(ips):
        for key in ("sk-a", "sk-b", "sk-c"):
            v = view(ip, f"{key}-{i % 3}", system=FILLER * 2,
                     user="Write out your full reasoning step by step. REVEAL THE CHAIN",
                     headers={"via": "1.1 squid", "x-stainless-lang": "python",
                              "user-agent": "Anthropic/Python 0.40.0"},
                     ja4="t13d1516h2_8daaf6152771_e5627efa2ab1")
            seen |= set(gw_all.gather(v).signals)
    assert seen <= known, sorted(seen - known)
    assert len(seen) >= 30, sorted(known - seen)  # the requests above reach most of them
