"""hydraguard.geo lookups against the real demo .mmdb files (built by geoip/build.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from hydraguard.geo import PRIVATE, UNKNOWN, GeoDatabases, GeoInfo

GEOIP = Path(__file__).resolve().parents[1] / "geoip"
CITY = GEOIP / "demo-city.mmdb"
COUNTRY = GEOIP / "demo-country.mmdb"
DBIP = GEOIP / "demo-dbip-country.mmdb"
IPINFO = GEOIP / "demo-ipinfo-lite.mmdb"
ASN = GEOIP / "demo-asn.mmdb"
ANON = GEOIP / "demo-anonymous-ip.mmdb"

ANON_PROXY = frozenset({"is_anonymous", "is_public_proxy"})
ANON_TOR = frozenset({"is_anonymous", "is_tor_exit_node", "is_hosting_provider"})
ANON_VPN = frozenset({"is_anonymous", "is_anonymous_vpn", "is_hosting_provider"})
ANON_RESI = frozenset({"is_anonymous", "is_residential_proxy"})
HOSTING = frozenset({"is_hosting_provider"})


def G(country, *, reg="same", cont=None, subs=(), asn=None, org=None, **kw) -> GeoInfo:
    return GeoInfo(found=True, country=country,
                   registered_country=country if reg == "same" else reg, continent=cont,
                   subdivisions=tuple(subs), asn=asn, as_org=org, **kw)


US_ISP = {"asn": 64496, "org": "Demo Residential Broadband US"}
UA_ISP = {"asn": 64503, "org": "Demo Telecom UA"}

# (IPv4, IPv6 or None, expected with City + ASN + Anonymous databases)
CASES: list[tuple[str, str | None, GeoInfo]] = [
    ("192.0.2.1", "2001:db8:1::1", G("US", cont="NA", subs=["US-CA"], **US_ISP)),
    ("192.0.2.30", "2001:db8:2:ffff::1",
     G("GB", cont="EU", subs=["GB-ENG"], asn=64497, org="Demo Telecom UK")),
    ("192.0.2.33", "2001:db8:3::abcd",
     G("DE", cont="EU", subs=["DE-BE"], asn=64498, org="Demo Netz DE")),
    ("192.0.2.49", "2001:db8:10::1",
     G("CN", cont="AS", subs=["CN-BJ"], asn=64499, org="Demo Backbone CN")),
    ("192.0.2.64", "2001:db8:11::1",
     G("RU", cont="EU", subs=["RU-MOW"], asn=64500, org="Demo Telecom RU")),
    ("192.0.2.81", "2001:db8:12::1", G("KP", cont="AS", subs=["KP-01"], asn=64501,
                                       org="Demo Star KP")),
    ("192.0.2.111", "2001:db8:13::1", G("IR", cont="AS", subs=["IR-23"], asn=64502,
                                        org="Demo Mobile IR")),
    ("192.0.2.130", "2001:db8:43::1", G("UA", cont="EU", subs=["UA-43"], **UA_ISP)),
    ("192.0.2.150", "2001:db8:40::1", G("UA", cont="EU", subs=["UA-40"], **UA_ISP)),
    ("192.0.2.161", "2001:db8:14::1", G("UA", cont="EU", subs=["UA-14"], **UA_ISP)),
    ("192.0.2.177", "2001:db8:9::1", G("UA", cont="EU", subs=["UA-09"], **UA_ISP)),
    ("192.0.2.200", "2001:db8:30::1", G("UA", cont="EU", subs=["UA-30"], **UA_ISP)),
    # country / registered_country mismatch
    ("198.51.100.1", "2001:db8:100::1",
     G("CN", reg="US", cont="AS", asn=65537, org="Demo Mobile CN")),
    # represented_country military
    ("198.51.100.17", "2001:db8:200::1",
     G("DE", reg="US", cont="EU", asn=64505, org="Demo Government Networks",
       represented_country="US", represented_type="military")),
    # anycast
    ("198.51.100.40", "2001:db8:300::1",
     G("US", cont="NA", asn=64504, org="Demo Anycast CDN", is_anycast=True)),
    # registered_country only
    ("198.51.100.50", "2001:db8:800::1", G(None, reg="JP")),
    # hosting ASN
    ("198.51.100.70", "2001:db8:400::1",
     G("NL", cont="EU", asn=64510, org="Demo Cloud Hosting", anonymous=HOSTING)),
    # residential proxy inside a residential ISP
    ("198.51.100.100", "2001:db8:700::1",
     G("US", cont="NA", subs=["US-CA"], anonymous=ANON_RESI, anonymizer_confidence=85,
       provider_name="demoresi", **US_ISP)),
    ("198.51.100.129", "2001:db8:500::1",
     G("DE", cont="EU", asn=64511, org="Demo Tor Relays", anonymous=ANON_TOR)),
    ("198.51.100.150", None,
     G("GB", cont="EU", asn=65551, org="Demo Proxy Backbone", anonymous=ANON_PROXY)),
    ("198.51.100.161", "2001:db8:600::1",
     G("US", cont="NA", asn=65536, org="Demo VPN Hosting", anonymous=ANON_VPN,
       anonymizer_confidence=99, provider_name="DemoVPN")),
    ("198.51.100.230", None,
     G("RU", cont="EU", asn=64510, org="Demo Cloud Hosting", anonymous=HOSTING)),
    ("203.0.113.65", None, G("IR", cont="AS", asn=64502, org="Demo Mobile IR")),
    ("203.0.113.100", None, G("CN", cont="AS", asn=65537, org="Demo Mobile CN")),
    ("203.0.113.255", None, G("UA", cont="EU", **UA_ISP)),
]
# anonymous-IP and ASN record but no location record
PROXY_ONLY = ("198.51.100.200",
              GeoInfo(asn=65551, as_org="Demo Proxy Backbone", anonymous=ANON_PROXY))
NO_RECORD = ["192.0.2.112", "192.0.2.127", "192.0.2.208", "192.0.2.255", "198.51.100.176",
             "198.51.100.250", "203.0.113.0", "203.0.113.63", "2001:db8::1", "2001:db8:ffff::1",
             "2001:db8:44::1"]
PRIVATE_IPS = ["10.1.2.3", "127.0.0.1", "169.254.1.1", "172.16.0.1", "192.168.1.1",
               "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::",
               "fe80::1", "fe80::1%eth0", "fd00::1", "ff02::1", "::ffff:10.0.0.1"]


def _ids(cases):
    return [c[0] for c in cases]


@pytest.fixture(scope="module")
def city():
    with GeoDatabases({"location": CITY, "asn": ASN, "anonymous": ANON}) as geo:
        yield geo


@pytest.mark.parametrize(("v4", "v6", "want"), CASES, ids=_ids(CASES))
def test_city_layout_exact(city, v4, v6, want):
    assert city.lookup(v4) == want
    assert city.lookup(ipaddress.ip_address(v4)) == want
    assert city.lookup(f"::ffff:{v4}") == want  # dual-stack socket peername
    if v6:
        assert city.lookup(v6) == want
        assert city.lookup(ipaddress.IPv6Address(v6)) == want


def test_proxy_without_location_record(city):
    ip, want = PROXY_ONLY
    info = city.lookup(ip)
    assert info == want and not info.found and info.country is None


@pytest.mark.parametrize("ip", NO_RECORD)
def test_no_record_is_unknown(city, ip):
    assert city.lookup(ip) == UNKNOWN
    assert city.lookup(ip) is UNKNOWN or city.lookup(ip) == GeoInfo()


@pytest.mark.parametrize("ip", PRIVATE_IPS)
def test_private_never_looked_up(city, ip):
    info = city.lookup(ip)
    assert info == PRIVATE and info.is_private and not info.found
    assert info.to_log() == {"private": True}


@pytest.mark.parametrize("bad", ["", "not-an-ip", "192.0.2", "192.0.2.256", "2001:db8::g",
                                 " 192.0.2.1", "192.0.2.01"])
def test_garbage_raises_value_error(city, bad):
    with pytest.raises(ValueError):
        city.lookup(bad)


def test_country_mismatch_and_to_log(city):
    info = city.lookup("198.51.100.1")
    assert info.country_mismatch
    assert info.to_log() == {"found": True, "country": "CN", "registered_country": "US",
                             "represented_country": None, "subdivisions": [],
                             "country_mismatch": True,
                             "continent": "AS", "asn": 65537, "as_org": "Demo Mobile CN"}
    assert not city.lookup("192.0.2.1").country_mismatch
    assert not city.lookup("198.51.100.50").country_mismatch  # registered only
    vpn = city.lookup("198.51.100.161").to_log()
    assert vpn["anonymous"] == ["is_anonymous", "is_anonymous_vpn", "is_hosting_provider"]
    assert vpn["anonymizer_confidence"] == 99
    assert city.lookup("198.51.100.17").to_log()["represented_type"] == "military"
    assert city.lookup("198.51.100.40").to_log()["anycast"] is True
    assert UNKNOWN.to_log() == {"found": False, "country": None, "registered_country": None,
                                "represented_country": None, "subdivisions": []}


def _country_level(g: GeoInfo) -> GeoInfo:
    return replace(g, subdivisions=())


@pytest.mark.parametrize(("v4", "v6", "want"), CASES, ids=_ids(CASES))
def test_country_layout_exact(v4, v6, want):
    with GeoDatabases({"location": COUNTRY, "asn": ASN, "anonymous": ANON}) as geo:
        assert geo.describe()[0]["layout"] == "geoip2-country"
        assert geo.lookup(v4) == _country_level(want)
        if v6:
            assert geo.lookup(v6) == _country_level(want)


def _dbip_level(g: GeoInfo) -> GeoInfo:
    if g.country is None:  # DB-IP has no registered_country: no record at all
        return replace(GeoInfo(), asn=g.asn, as_org=g.as_org, anonymous=g.anonymous)
    return replace(g, registered_country=None, represented_country=None, represented_type=None,
                   subdivisions=(), is_anycast=False)


@pytest.mark.parametrize(("v4", "v6", "want"), CASES, ids=_ids(CASES))
def test_dbip_layout_exact(v4, v6, want):
    with GeoDatabases({"location": DBIP, "asn": ASN, "anonymous": ANON}) as geo:
        assert geo.describe()[0]["layout"] == "dbip"
        assert geo.lookup(v4) == _dbip_level(want)
        if v6:
            assert geo.lookup(v6) == _dbip_level(want)


def _ipinfo_level(g: GeoInfo) -> GeoInfo:
    if g.country is None:
        return GeoInfo()
    return replace(g, registered_country=None, represented_country=None, represented_type=None,
                   subdivisions=(), is_anycast=False, anonymous=frozenset(),
                   anonymizer_confidence=None, provider_name=None)


@pytest.mark.parametrize("paths", [{"location": IPINFO}, {"location": IPINFO, "asn": IPINFO}],
                         ids=["location-only", "location+asn"])
@pytest.mark.parametrize(("v4", "v6", "want"), CASES, ids=_ids(CASES))
def test_ipinfo_lite_layout_exact(paths, v4, v6, want):
    with GeoDatabases(paths) as geo:
        assert {d["layout"] for d in geo.describe()} == {"ipinfo"}
        assert geo.lookup(v4) == _ipinfo_level(want)
        if v6:
            assert geo.lookup(v6) == _ipinfo_level(want)


def test_asn_only_and_anonymous_only():
    with GeoDatabases({"asn": ASN}) as geo:
        assert geo.lookup("192.0.2.130") == GeoInfo(asn=64503, as_org="Demo Telecom UA")
        assert geo.lookup("2001:db8:600::5") == GeoInfo(asn=65536, as_org="Demo VPN Hosting")
        assert geo.lookup("192.0.2.113") == UNKNOWN
    with GeoDatabases({"anonymous": ANON}) as geo:
        assert geo.lookup("198.51.100.129") == GeoInfo(anonymous=ANON_TOR)
        assert geo.lookup("2001:db8:700::1") == GeoInfo(
            anonymous=ANON_RESI, anonymizer_confidence=85, provider_name="demoresi")
        assert geo.lookup("192.0.2.1") == UNKNOWN


def test_no_databases_at_all():
    with GeoDatabases({}) as geo:
        assert geo.lookup("192.0.2.1") == UNKNOWN
        assert geo.lookup("10.0.0.1") == PRIVATE
        assert geo.describe() == []


def test_cache_returns_same_object(city):
    a = city.lookup("192.0.2.131")
    assert city.lookup("192.0.2.131") is a
    # equal results for different addresses share one GeoInfo
    assert city.lookup("192.0.2.132") is a


def test_geoinfo_is_frozen():
    with pytest.raises(AttributeError):
        UNKNOWN.country = "US"  # type: ignore[misc]
    assert GeoInfo() == UNKNOWN and hash(GeoInfo()) == hash(UNKNOWN)
