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
