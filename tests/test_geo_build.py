"""geoip/build.py: deterministic, in sync with the committed files, real layouts."""

from __future__ import annotations

import subprocess
import sys

import maxminddb
import pytest

from .geoip_util import GEOIP, load_build

build = load_build()
NAMES = list(build.DATABASES)


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    build.build_all(a)
    build.build_all(b)
    return a, b


@pytest.mark.parametrize("name", NAMES)
def test_build_is_byte_deterministic_and_committed_files_current(two_builds, name):
    a, b = two_builds
    assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (GEOIP / name).read_bytes() == (a / name).read_bytes(), (
        f"geoip/{name} is stale: run python geoip/build.py")


@pytest.mark.parametrize(("name", "db_type"), [
    ("demo-city.mmdb", "GeoIP2-City"),
    ("demo-country.mmdb", "GeoLite2-Country"),
    ("demo-dbip-country.mmdb", "DBIP-Country-Lite"),
    ("demo-ipinfo-lite.mmdb", "ipinfo bundle_location_lite.mmdb"),
    ("demo-asn.mmdb", "GeoLite2-ASN"),
    ("demo-anonymous-ip.mmdb", "GeoIP-Anonymous-Plus"),
])
def test_metadata(name, db_type):
    with maxminddb.open_database(str(GEOIP / name)) as r:
        m = r.metadata()
        assert m.database_type == db_type
        assert m.ip_version == 6 and m.binary_format_major_version == 2
        assert m.build_epoch == 1735689600
        assert (GEOIP / name).stat().st_size < 20_000  # small enough to commit


def test_raw_records_follow_the_real_layouts():
    def get(name, ip):
        with maxminddb.open_database(str(GEOIP / name)) as r:
            return r.get(ip)

    city = get("demo-city.mmdb", "192.0.2.130")
    assert city["country"]["iso_code"] == "UA"
    assert city["subdivisions"] == [
        {"geoname_id": 703883, "iso_code": "43", "names": {"en": "Crimea", "de": "Krim"}}]
    assert city["city"]["names"]["en"] == "Simferopol"
    mil = get("demo-country.mmdb", "198.51.100.17")
    assert mil["represented_country"]["type"] == "military"
    assert "subdivisions" not in mil
    assert get("demo-country.mmdb", "198.51.100.40")["traits"] == {"is_anycast": True}
    assert get("demo-dbip-country.mmdb", "192.0.2.33") == {
        "continent": {"code": "EU", "geoname_id": 6255148,
                      "names": {"en": "Europe", "de": "Europa"}},
        "country": {"geoname_id": 2921044, "is_in_european_union": True, "iso_code": "DE",
                    "names": {"en": "Germany", "de": "Deutschland"}},
    }
    assert get("demo-ipinfo-lite.mmdb", "2001:db8:600::1") == {
        "as_domain": "vpn-hosting.example", "as_name": "Demo VPN Hosting", "asn": "AS65536",
        "continent": "North America", "continent_code": "NA", "country": "United States",
        "country_code": "US"}
    assert get("demo-asn.mmdb", "203.0.113.100") == {
        "autonomous_system_number": 65537, "autonomous_system_organization": "Demo Mobile CN"}
    assert get("demo-anonymous-ip.mmdb", "198.51.100.161") == {
        "anonymizer_confidence": 99, "is_anonymous": True, "is_anonymous_vpn": True,
        "is_hosting_provider": True, "network_last_seen": "2024-12-31",
        "provider_name": "DemoVPN"}
    # only-true booleans: no False values anywhere
    assert get("demo-anonymous-ip.mmdb", "198.51.100.70") == {"is_hosting_provider": True}


def test_source_only_uses_documentation_ranges_and_asns():
    import ipaddress

    src = build.load_source()
    doc = [ipaddress.ip_network(n) for n in
           ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
    for e in src["networks"]:
        net = ipaddress.ip_network(e["network"])
        assert any(net.version == d.version and net.subnet_of(d) for d in doc), net
    for asn in src["asns"]:
        assert 64496 <= asn <= 64511 or 65536 <= asn <= 65551, asn


def test_cli_check_and_out(tmp_path):
    ok = subprocess.run([sys.executable, str(GEOIP / "build.py"), "--check"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = subprocess.run([sys.executable, str(GEOIP / "build.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert sorted(p.name for p in tmp_path.glob("*.mmdb")) == sorted(NAMES)
    assert "demo-city.mmdb" in out.stdout
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


@pytest.mark.parametrize("name", NAMES)
def test_demo_marker_in_every_description(name):
    """hydraguard warns about demo data by this marker (geo/verify.py), not by file name."""
    from hydraguard.geo import verify

    assert build.DEMO_MARKER == verify.DEMO_MARKER
    with maxminddb.open_database(str(GEOIP / name)) as r:
        assert r.metadata().description["en"].startswith(f"{verify.DEMO_MARKER}: ")
        assert verify.is_demo(r.metadata())
