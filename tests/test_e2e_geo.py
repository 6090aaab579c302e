"""Regional restrictions through the real proxy, one proxy per database layout; the client
address is given by X-Forwarded-For from the trusted test peer (127.0.0.1)."""

from __future__ import annotations

import anthropic
import openai
import pytest

from hydraguard_dev.procs import ROOT, proxy

pytestmark = pytest.mark.e2e

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
geoip:
  location: {db}
rules:
  - id: regions
    region:
      allow_countries: [US, GB, DE, UA]
      deny_subdivisions: [UA-43]
      unknown_country: deny
      no_record: throttle
    action: deny
"""
LAYOUTS = {
    "geoip2-city": "demo-city.mmdb",
    "geoip2-country": "demo-country.mmdb",
    "dbip": "demo-dbip-country.mmdb",
    "ipinfo": "demo-ipinfo-lite.mmdb",
}


def ant(p, ip):
    return anthropic.Anthropic(base_url=p.url, api_key="sk-geo", max_retries=0,
                               default_headers={"x-forwarded-for": ip})


def call(p, ip):
    return ant(p, ip).messages.create(model="m", max_tokens=2,
                                      messages=[{"role": "user", "content": "hi"}])


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def geo_proxy(request, stub, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    rules = d / "rules.yaml"
    rules.write_text(RULES.format(db=ROOT / "geoip" / LAYOUTS[request.param]))
    with proxy(stub.url, rules) as p:
        yield request.param, p


def test_allowed_country_passes(geo_proxy):
    _, p = geo_proxy
    assert call(p, "192.0.2.1").usage.output_tokens == 2  # US
    rec = p.wait_lines(1)[-1]
    assert rec["geo"]["country"] == "US" and rec["rule"] == "default"


def test_denied_country_gets_provider_403(geo_proxy):
    _, p = geo_proxy
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        call(p, "192.0.2.49")  # CN
    assert e.value.body["error"]["type"] == "permission_error"
    assert e.value.body["error"]["message"] == "country CN is not supported"
    with pytest.raises(openai.PermissionDeniedError) as e2:
        openai.OpenAI(base_url=p.url + "/v1", api_key="k", max_retries=0,
                      default_headers={"x-forwarded-for": "2001:db8:10::5"}
                      ).chat.completions.create(model="m", messages=[
                          {"role": "user", "content": "x"}])
    assert e2.value.code == "unsupported_country_region_territory"
    rec = p.by_request(e2.value.response.headers["x-request-id"])
    assert (rec["client_ip"], rec["geo"]["country"], rec["rule"]) == (
        "2001:db8:10::5", "CN", "regions")


def test_subdivision_rule(geo_proxy):
    layout, p = geo_proxy
    if layout != "geoip2-city":
        # Country-level layouts carry no subdivisions: UA-43 is just UA there.
        assert call(p, "192.0.2.129").usage.output_tokens == 2
        return
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        call(p, "192.0.2.129")
    assert "UA-43" in e.value.body["error"]["message"]
    assert call(p, "192.0.2.193").usage.output_tokens == 2  # UA-30 Kyiv


def test_unknown_country_and_no_record(geo_proxy):
    layout, p = geo_proxy
    with pytest.raises(anthropic.RateLimitError):
        call(p, "192.0.2.113")  # no record anywhere -> throttle
    if layout in ("geoip2-city", "geoip2-country"):
        with pytest.raises(anthropic.PermissionDeniedError) as e:
            call(p, "198.51.100.49")  # record with registered country only
        assert e.value.body["error"]["message"] == "client country unknown"


def test_spoofed_header_from_untrusted_peer_does_not_move_country(stub, tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES.format(db=ROOT / "geoip/demo-city.mmdb").replace(
        "trusted_proxies: [127.0.0.1/32]", "trusted_proxies: [10.0.0.0/8]").replace(
        "allow_countries: [US, GB, DE, UA]", "deny_countries: [CN]"))
    with proxy(stub.url, rules) as p:
        # the peer (127.0.0.1) is not trusted: the header claiming a CN address is ignored
        assert call(p, "192.0.2.49").usage.output_tokens == 2
        rec = p.wait_lines(1)[-1]
        assert (rec["client_ip"], rec["client_ip_source"], rec["geo"]) == (
            "127.0.0.1", "peer", {"private": True})


def test_missing_database_stops_run_naming_file(tmp_path):
    import subprocess
    import sys

    rules = tmp_path / "r.yaml"
    rules.write_text(RULES.format(db=tmp_path / "nope.mmdb"))
    out = subprocess.run([sys.executable, "-m", "hydraguard", "run", "--upstream",
                          "http://127.0.0.1:9", "--rules", str(rules)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert str(tmp_path / "nope.mmdb") in out.stderr


# -- damaged and demo databases -----------------------------------------------------------------
DENY_LIST = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
geoip:
  location: {db}
rules:
  - id: sanctions
    region:
      deny_countries: [KP, IR]
      no_record: allow           # a deny-list lets the unknown through...
      unknown_country: allow     # ...but not a failed lookup (lookup_error: action)
    action: deny
"""
DATA_BAD = ("The MaxMind DB file's data section contains bad data (unknown data type or "
            "corrupt data)")


def _raw_call(p, ip):
    import httpx

    return httpx.post(p.url + "/v1/messages", headers={
        "x-api-key": "sk-geo", "anthropic-version": "2023-06-01", "x-forwarded-for": ip,
        "content-type": "application/json"}, json={
        "model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30)


def test_database_damaged_under_the_running_proxy_refuses(stub, tmp_path):
    """The KP record of the City file is damaged in place after start (metadata and every
    other record intact): the lookup fails, and the deny-list refuses instead of taking the
    address for one with no record (which it would let through)."""
    from .geoip_util import build_city, damage_record

    db = build_city(tmp_path / "db")
    rules = tmp_path / "rules.yaml"
    rules.write_text(DENY_LIST.format(db=db))
    with proxy(stub.url, rules) as p:
        assert _raw_call(p, "192.0.2.1").status_code == 200  # US
        damage_record(db)
        r = _raw_call(p, "192.0.2.81")  # KP: served 200 before the fix (lookup error = none)
        assert r.status_code == 403
        rid = r.headers["request-id"]
        assert r.json() == {"type": "error", "request_id": rid, "error": {
            "type": "permission_error",
            "message": "GeoIP lookup of the client address failed"}}
        rec = p.by_request(rid)
        assert (rec["rule"], rec["action"], rec["reason"], rec["geo"]) == (
            "sanctions", "deny", "GeoIP lookup of the client address failed",
            {"found": False, "country": None, "registered_country": None,
             "represented_country": None, "subdivisions": [],
             "error": f"location lookup failed: {DATA_BAD}"})
        assert _raw_call(p, "192.0.2.17").status_code == 200  # GB: its record is intact
        assert _raw_call(p, "192.0.2.113").status_code == 200  # true no record: allowed


def test_damaged_database_stops_run_and_fails_check(tmp_path):
    import subprocess
    import sys

    from .geoip_util import build_city, damage_record

    db = build_city(tmp_path / "db")
    damage_record(db)
    rules = tmp_path / "r.yaml"
    rules.write_text(DENY_LIST.format(db=db))
    why = (f"GeoIP database {db}: corrupt (walk over the tree failed after 5 networks: "
           f"Error looking up data while iterating over tree: {DATA_BAD})")
    out = subprocess.run([sys.executable, "-m", "hydraguard", "run", "--upstream",
                          "http://127.0.0.1:9", "--rules", str(rules)],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr.strip()) == (
        2, f"hydraguard: cannot open GeoIP databases, not starting: {why}")
    out = subprocess.run([sys.executable, "-m", "hydraguard", "check", str(rules)],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.splitlines()) == (
        1, [f"geoip.location: {why}", f"{rules}: 1 error"])


def test_demo_databases_warn_loudly_at_start(stub, tmp_path):
    """Named like a real database, the demo file is still recognised (by its metadata)."""
    import shutil

    from .geoip_util import build_city

    demo = tmp_path / "GeoLite2-City.mmdb"
    shutil.copyfile(ROOT / "geoip" / "demo-city.mmdb", demo)
    rules = tmp_path / "rules.yaml"
    rules.write_text(DENY_LIST.format(db=demo))
    warning = (f"hydraguard: WARNING: DEMO GeoIP data: {demo} (location) hold fictional data "
               "for documentation address ranges only; real client addresses have no record "
               "in them, so NO real client is refused by country or region. Point `geoip:` at "
               "real databases before serving real traffic (geoip/README.md).")
    with proxy(stub.url, rules) as p:
        assert call(p, "192.0.2.1").usage.output_tokens == 2
        err = p.stderr()
    assert err.count(warning) == 1  # shown by `hydraguard run`, not again by the addon
    assert f"geoip location {demo.name} (geoip2-city, built 2025-01-01)" in err  # startup line
    real = build_city(tmp_path / "real", description="ACME City")
    rules.write_text(DENY_LIST.format(db=real) + "  - {id: allow-list, action: deny, region: "
                     "{allow_countries: [US]}}\n")
    with proxy(stub.url, rules) as p:
        err = p.stderr()
    assert "DEMO" not in err and f"geoip location {real.name} (geoip2-city, built " \
        "2025-01-01)" in err
    demo_rules = tmp_path / "allow.yaml"
    demo_rules.write_text(rules.read_text().replace(str(real), str(demo)))
    with proxy(stub.url, demo_rules) as p:
        err = p.stderr()
    assert "so region rule(s) allow-list refuse EVERY real client (their no_record outcome)." \
        in err
