"""Start-up errors, hot reload, bad updates: real .mmdb files, injected clock."""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path

import maxminddb
import pytest

from hydraguard.geo import UNKNOWN, GeoDatabaseError, GeoDatabases, GeoInfo

from .geoip_util import GEOIP, load_build

CITY = GEOIP / "demo-city.mmdb"
ASN = GEOIP / "demo-asn.mmdb"
ANON = GEOIP / "demo-anonymous-ip.mmdb"


build = load_build()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def geo_errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "hydraguard.geo" and r.levelno >= logging.ERROR]


@pytest.fixture
def live(tmp_path):
    """A writable copy of the demo City db, and a variant where 192.0.2.0/28 moved to DE."""
    path = tmp_path / "live" / "city.mmdb"
    path.parent.mkdir()
    shutil.copyfile(CITY, path)
    src = copy.deepcopy(build.load_source())
    src["networks"][0].update(country="DE", subdivisions=["BE"], city="Berlin")
    variant = build.build_one(src, "demo-city.mmdb", tmp_path / "variant")
    return path, variant


def _replace_with(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # atomic, as geoipupdate does


def _garbage(dst: Path, data: bytes = b"this is not a MaxMind database\n" * 50) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dst)


def test_atomic_replace_is_picked_up_after_interval(live):
    path, variant = live
    clock = Clock()
    with GeoDatabases({"location": path}, check_interval=2.0, clock=clock) as geo:
        assert geo.lookup("192.0.2.1").country == "US"
        _replace_with(variant, path)
        clock.t += 1.0  # interval not elapsed: cached and uncached answers stay old
        assert geo.lookup("192.0.2.1").country == "US"
        assert geo.lookup("192.0.2.2").country == "US"
        clock.t += 1.0
        info = geo.lookup("192.0.2.1")  # lookup() triggers the check; cache invalidated
        assert info.country == "DE" and info.subdivisions == ("DE-BE",)
        assert geo.lookup("192.0.2.130").subdivisions == ("UA-43",)  # rest unchanged


def test_maybe_reload_rate_limited_and_explicit(live):
    path, variant = live
    clock = Clock()
    with GeoDatabases({"location": path}, clock=clock, auto_reload=False) as geo:
        _replace_with(variant, path)
        clock.t += 10
        assert geo.lookup("192.0.2.1").country == "US"  # auto_reload off
        geo.maybe_reload()
        assert geo.lookup("192.0.2.1").country == "DE"
        _replace_with(CITY, path)
        geo.maybe_reload()  # same instant: rate limited
        assert geo.lookup("192.0.2.1").country == "DE"
        clock.t += 2
        geo.maybe_reload()
        assert geo.lookup("192.0.2.1").country == "US"


def test_garbage_update_keeps_old_reader_and_logs_once(live, caplog):
    path, variant = live
    clock = Clock()
    caplog.set_level(logging.INFO, logger="hydraguard.geo")
    with GeoDatabases({"location": path}, clock=clock) as geo:
        want = geo.lookup("192.0.2.130")
        _garbage(path)
        for _ in range(5):
            clock.t += 2.5
            assert geo.lookup("192.0.2.130") == want
            assert geo.lookup("192.0.2.131") == want  # uncached too
        errors = geo_errors(caplog)
        assert len(errors) == 1
        assert str(path) in errors[0].getMessage()
        assert "not a valid MaxMind DB" in errors[0].getMessage()
        assert "keeping the previously loaded version" in errors[0].getMessage()
        assert geo.describe()[0]["error"] and geo.describe()[0]["loaded"]
        # a good version recovers, and a *new* bad version is reported again (once)
        _replace_with(variant, path)
        clock.t += 2.5
        assert geo.lookup("192.0.2.1").country == "DE"
        assert geo.describe()[0]["error"] is None
        _garbage(path, b"\x00" * 4096)
        for _ in range(3):
            clock.t += 2.5
            assert geo.lookup("192.0.2.1").country == "DE"
        assert len(geo_errors(caplog)) == 2


def test_truncated_update_rejected(live, caplog):
    path, _ = live
    clock = Clock()
    with GeoDatabases({"location": path}, clock=clock) as geo:
        data = CITY.read_bytes()
        _garbage(path, data[: len(data) // 2])
        clock.t += 3
        assert geo.lookup("192.0.2.1").country == "US"
        assert len(geo_errors(caplog)) == 1


def test_in_place_overwrite_with_memory_mode(live, caplog):
    """Non-atomic writers (cp over the file) are only safe with MODE_MEMORY; see README."""
    path, _ = live
    clock = Clock()
    with GeoDatabases({"location": path}, clock=clock, mode=maxminddb.MODE_MEMORY) as geo:
        path.write_bytes(b"garbage" * 100)
        clock.t += 3
        assert geo.lookup("192.0.2.1").country == "US"
        assert len(geo_errors(caplog)) == 1


def test_deleted_file_keeps_old_reader_then_recovers(live, caplog):
    path, variant = live
    clock = Clock()
    with GeoDatabases({"location": path}, clock=clock) as geo:
        path.unlink()
        for _ in range(3):
            clock.t += 3
            assert geo.lookup("192.0.2.1").country == "US"
        errors = geo_errors(caplog)
        assert len(errors) == 1 and "missing" in errors[0].getMessage()
        _replace_with(variant, path)
        clock.t += 3
        assert geo.lookup("192.0.2.1").country == "DE"


def test_missing_at_start_raises_naming_the_file(tmp_path):
    missing = tmp_path / "nope" / "GeoLite2-City.mmdb"
    with pytest.raises(GeoDatabaseError, match=r"GeoLite2-City\.mmdb") as err:
        GeoDatabases({"location": missing, "asn": ASN})
    assert "not found" in str(err.value)


def test_corrupt_at_start_raises(tmp_path):
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(GeoDatabaseError, match=r"bad\.mmdb.*not a valid MaxMind DB"):
        GeoDatabases({"location": bad})


def test_wrong_layout_for_role_raises():
    with pytest.raises(GeoDatabaseError, match="cannot serve as 'location'"):
        GeoDatabases({"location": ASN})
    with pytest.raises(GeoDatabaseError, match="cannot serve as 'asn'"):
        GeoDatabases({"asn": CITY})
    with pytest.raises(ValueError, match="unknown GeoIP database role"):
        GeoDatabases({"city": CITY})


def test_optional_runs_without_missing_db_and_loads_it_later(tmp_path, caplog):
    path = tmp_path / "city.mmdb"
    clock = Clock()
    with GeoDatabases({"location": path, "asn": ASN}, optional=True, clock=clock) as geo:
        errors = geo_errors(caplog)
        assert len(errors) == 1 and str(path) in errors[0].getMessage()
        assert geo.roles == {"asn"}
        assert geo.lookup("192.0.2.130") == GeoInfo(asn=64503, as_org="Demo Telecom UA")
        assert geo.lookup("192.0.2.113") == UNKNOWN
        desc = {d["role"]: d for d in geo.describe()}
        assert not desc["location"]["loaded"] and "not found" in desc["location"]["error"]
        clock.t += 3
        geo.lookup("192.0.2.1")
        assert len(geo_errors(caplog)) == 1  # still missing: not repeated
        _replace_with(CITY, path)
        clock.t += 3
        assert geo.lookup("192.0.2.130").subdivisions == ("UA-43",)
        assert geo.roles == {"location", "asn"}


def test_describe_and_close():
    geo = GeoDatabases({"location": CITY, "asn": ASN, "anonymous": ANON})
    desc = geo.describe()
    assert [d["role"] for d in desc] == ["location", "asn", "anonymous"]
    assert desc[0] == {
        "role": "location", "path": str(CITY), "loaded": True, "layout": "geoip2-city",
        "database_type": "GeoIP2-City", "build_epoch": 1735689600,
        "build_time": "2025-01-01T00:00:00Z", "node_count": desc[0]["node_count"],
        "ip_version": 6, "record_size": 24, "demo": True, "verified": "verified",
        "error": None,
    }
    assert desc[0]["node_count"] > 100
    assert desc[1]["database_type"] == "GeoLite2-ASN"
    assert desc[2]["database_type"] == "GeoIP-Anonymous-Plus"
    geo.close()
    assert geo.lookup("192.0.2.1") == UNKNOWN
    assert geo.roles == frozenset()


def test_ipv4_only_database(tmp_path):
    """IPv6 lookups in an IPv4-tree database answer 'no record' instead of raising."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=4, database_type="GeoLite2-Country")
    w.insert_network(IPSet(["192.0.2.0/24"]), {"country": {"iso_code": "US"}})
    p = tmp_path / "v4.mmdb"
    w.to_db_file(str(p))
    with GeoDatabases({"location": p}) as geo:
        assert geo.lookup("192.0.2.9") == GeoInfo(found=True, country="US")
        assert geo.lookup("2001:db8:1::1") == UNKNOWN


def test_unknown_database_type_uses_record_shape(tmp_path):
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="acme-geo")
    w.insert_network(IPSet(["192.0.2.0/24"]),
                     {"country_code": "GB", "continent_code": "EU", "asn": "AS64511",
                      "as_name": "Acme"})
    p = tmp_path / "acme.mmdb"
    w.to_db_file(str(p))
    with GeoDatabases({"location": p, "asn": p}) as geo:
        assert geo.describe()[0]["layout"] == "ipinfo"
        assert geo.lookup("192.0.2.9") == GeoInfo(found=True, country="GB", continent="EU",
                                                  asn=64511, as_org="Acme")
