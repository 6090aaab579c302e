"""Damaged GeoIP databases: refused before use (structure check), and a lookup that fails at
request time is its own state (GeoInfo.error), never "no record". Real files built by
geoip/build.py, then damaged."""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path

import maxminddb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from hydraguard.geo import GeoDatabaseError, GeoDatabases, GeoInfo, open_checked, verify
from hydraguard.geo.layouts import RecordError, location_nested

from .geoip_util import (
    GEOIP,
    build_city,
    damage_record,
    load_build,
    overwrite,
    tree_bytes,
)

DATA_BAD = ("The MaxMind DB file's data section contains bad data (unknown data type or "
            "corrupt data)")
KP_FAILED = GeoInfo(error=f"location lookup failed: {DATA_BAD}")
DAY = 86400


@pytest.fixture
def city(tmp_path) -> Path:
    """A fresh City database (demo data) built by geoip/build.py, writable."""
    return build_city(tmp_path / "built")


def _networks(path: Path) -> int:
    with maxminddb.open_database(str(path)) as r:
        return sum(1 for _ in r)


def test_intact_build_is_verified_completely(city):
    o = open_checked(city, ("location",))
    try:
        v = o.verification
        assert (v.networks, v.samples, v.complete) == (_networks(city), 4096 + 1024, True)
        assert v.summary() == "verified"
        assert o.demo and o.description.startswith("hydraguard demo: GeoIP2 City layout")
    finally:
        o.reader.close()


def _damaged(city: Path, where: str) -> Path:
    t = tree_bytes(city)
    rnd = random.Random(7)
    if where == "tree-random":
        overwrite(city, 600, bytes(rnd.randrange(256) for _ in range(600)))
    elif where == "tree-zeros":
        overwrite(city, 600, bytes(600))
    elif where == "separator":
        overwrite(city, t, b"\x01" * 16)
    elif where == "data-ff":
        overwrite(city, t + 16 + 1000, b"\xff" * 800)
    elif where == "data-zeros":  # zeros decode without error, as empty maps: garbage types
        overwrite(city, t + 16 + 1000, bytes(800))
    else:
        damage_record(city)  # only the KP record
    return city


WALK = r"walk over the tree failed after \d+ networks: "
ITER_BAD = re.escape("Error looking up data while iterating over tree: " + DATA_BAD)


@pytest.mark.parametrize(("where", "reason"), [
    ("tree-random", r"search tree is corrupt: a record of node 106 points past the data "
                    r"section"),
    ("tree-zeros", r"search tree is corrupt: a record of node 100 points back to the root"),
    ("separator", r"no data section separator after the search tree"),
    ("data-ff", WALK + ITER_BAD),
    ("data-zeros", WALK + r"malformed record: country\.iso_code is a dict"),
    ("one-record", WALK + ITER_BAD),
])
def test_damaged_database_is_refused_at_start(city, where, reason):
    """Each of these opens with maxminddb and answers most lookups: without the structure
    check hydraguard started on them."""
    path = _damaged(city, where)
    with maxminddb.open_database(str(path)) as r:  # the metadata still opens
        assert r.metadata().database_type == "GeoIP2-City"
    with pytest.raises(GeoDatabaseError) as err:
        GeoDatabases({"location": path})
    msg = str(err.value)
    assert msg.startswith(f"GeoIP database {path}: corrupt (")
    assert re.fullmatch(reason, msg[len(f"GeoIP database {path}: corrupt ("):-1])


def test_damaged_database_with_optional_runs_without_it(city, caplog):
    damage_record(city)
    with GeoDatabases({"location": city}, optional=True) as geo:
        assert geo.roles == frozenset()
        assert geo.lookup("192.0.2.81") == GeoInfo()  # no location database: no record
        assert "corrupt" in geo.describe()[0]["error"]


def test_spread_lookups_find_damage_without_a_walk(tmp_path):
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    w.insert_network(IPSet(["0.0.0.0/1"]), {"country": {"iso_code": "US"}})
    w.insert_network(IPSet(["128.0.0.0/1"]), {"country": {"iso_code": "DAMAGED-HERE"}})
    path = tmp_path / "wide.mmdb"
    w.to_db_file(str(path))
    damage_record(path, b"DAMAGED-HERE")  # not the first record (that one is read anyway)
    with pytest.raises(GeoDatabaseError) as err:
        open_checked(path, ("location",), verify_seconds=0)  # no walk
    assert str(err.value) == (f"GeoIP database {path}: corrupt (lookup of 128.13.136.0 failed: "
                              f"Error while looking up data for 128.13.136.0. {DATA_BAD})")


class StepClock:
    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_walk_is_bounded_in_time(city, monkeypatch):
    monkeypatch.setattr(verify, "_CHECK_EVERY", 4)
    with maxminddb.open_database(str(city)) as r:
        from hydraguard.geo.layouts import DECODERS

        v = verify.verify(r, city, (DECODERS[("location", "geoip2-city")],), 5.0,
                          StepClock(10.0))
    assert (v.networks, v.samples, v.complete, v.seconds) == (4, 5120, False, 20.0)
    assert v.summary() == ("partly verified: tree scanned, 5120 spread lookups, first 4 "
                           "networks walked in 20 s")


def test_a_file_version_is_checked_once(city, monkeypatch):
    calls = []
    real = verify.check_records
    monkeypatch.setattr(verify, "check_records", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(2):
        open_checked(city, ("location",)).reader.close()
    assert len(calls) == 1
    st = city.stat()
    os.utime(city, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a new version
    open_checked(city, ("location",)).reader.close()
    assert len(calls) == 2


@pytest.mark.parametrize("size", [24, 28, 32])
def test_raw_record_decoding_matches_the_format(size):
    rnd = random.Random(size)
    node = size // 4
    data = bytes(rnd.randrange(256) for _ in range(node * 50))
    want = []
    for i in range(50):
        b = data[i * node:(i + 1) * node]
        if size == 24:
            want += [int.from_bytes(b[:3]), int.from_bytes(b[3:])]
        elif size == 28:
            want += [((b[3] & 0xF0) << 20) | int.from_bytes(b[:3]),
                     ((b[3] & 0x0F) << 24) | int.from_bytes(b[4:])]
        else:
            want += [int.from_bytes(b[:4]), int.from_bytes(b[4:])]
    assert list(verify._records(data, size)) == want


# ---------------------------------------------------------------------------- request time


def test_failed_lookup_is_its_own_state_not_no_record(city, caplog):
    """The file is damaged under a running reader (an in-place copy): lookups reaching the
    damaged record fail, and say so."""
    with GeoDatabases({"location": city}, auto_reload=False) as geo:
        assert geo.lookup("192.0.2.1").country == "US"
        damage_record(city)
        info = geo.lookup("192.0.2.81")  # KP
        assert info == KP_FAILED
        assert info.location_error and not info.found
        assert info.to_log() == {
            "found": False, "country": None, "registered_country": None,
            "represented_country": None, "subdivisions": [],
            "error": f"location lookup failed: {DATA_BAD}"}
        assert geo.lookup("192.0.2.82") is info  # same text, same object (no address in it)
        assert geo.lookup("192.0.2.17").country == "GB"  # other records still answer
        assert geo.lookup("192.0.2.113") == GeoInfo()  # a true "no record" stays that
    errors = [r.getMessage() for r in caplog.records
              if r.name == "hydraguard.geo" and r.levelno >= logging.ERROR]
    assert errors == [f"GeoIP location lookup failed: {DATA_BAD}, e.g. for 192.0.2.81: the "
                      "database file is damaged; region rules take their lookup_error outcome"]


def test_failed_asn_lookup_keeps_the_country(tmp_path):
    build = load_build()
    asn = build.build_one(build.load_source(), "demo-asn.mmdb", tmp_path)
    with GeoDatabases({"location": GEOIP / "demo-city.mmdb", "asn": asn},
                      auto_reload=False) as geo:
        damage_record(asn, b"Demo Star KP")
        info = geo.lookup("192.0.2.81")
        assert (info.found, info.country, info.asn, info.location_error) == (
            True, "KP", None, False)
        assert info.error == f"asn lookup failed: {DATA_BAD}"


def test_damaged_new_version_keeps_the_loaded_one(city, tmp_path, caplog):
    live = tmp_path / "live.mmdb"
    shutil.copyfile(city, live)
    clock = StepClock(0)
    clock.t = 100.0
    with GeoDatabases({"location": live}, clock=clock) as geo:
        bad = tmp_path / "bad.mmdb"
        shutil.copyfile(city, bad)
        damage_record(bad)
        os.replace(bad, live)  # atomic, but the new version is damaged
        clock.t += 10
        assert geo.lookup("192.0.2.81").country == "KP"  # the old version answers
        d = geo.describe()[0]
        assert d["loaded"] and "corrupt (walk over the tree failed" in d["error"]


def test_strict_decoder_rejects_garbage_types():
    assert location_nested({"country": {"iso_code": "UA"}, "subdivisions": [
        {"iso_code": "43"}]})[5] == ("UA-43",)
    for rec in ({"country": {"iso_code": {}}}, {"continent": {"code": 7}},
                {"country": {"iso_code": "UA"}, "subdivisions": [{"iso_code": {}}]},
                {"country": [1]}, [1, 2], {"subdivisions": "UA-43"}):
        with pytest.raises(RecordError, match="malformed record"):
            location_nested(rec)


# ---------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("name", sorted(p.name for p in GEOIP.glob("demo-*.mmdb")))
def test_demo_databases_are_recognised_by_metadata_not_name(name, tmp_path):
    renamed = tmp_path / "GeoLite2-City.mmdb"  # a name a real database would have
    shutil.copyfile(GEOIP / name, renamed)
    o = open_checked(renamed)
    o.reader.close()
    assert o.demo


def test_own_build_is_not_demo_and_ages(tmp_path):
    epoch = 1_800_000_000
    path = build_city(tmp_path, build_epoch=epoch, description="ACME City 2027-01")
    with GeoDatabases({"location": path}, max_age_days=45) as geo:
        assert not geo.describe()[0]["demo"]
        assert geo.notices(now=epoch + 45 * DAY) == []
        assert geo.notices(now=epoch + 100 * DAY) == [
            f"GeoIP database {path} (location) was built 2027-01-15, 100 days ago (more than "
            "geoip.max_age_days 45): regional decisions use stale data; update it "
            "(geoip/README.md)"]
    with GeoDatabases({"location": path}, max_age_days=0) as geo:
        assert geo.notices(now=epoch + 1000 * DAY) == []


def test_demo_database_notice_replaces_the_age_warning():
    with GeoDatabases({"location": GEOIP / "demo-city.mmdb"}) as geo:
        assert geo.notices(now=2_000_000_000) == [
            f"GeoIP database {GEOIP / 'demo-city.mmdb'} (location) is a hydraguard demo "
            "database: fictional data for documentation address ranges only; real client "
            "addresses have no record in it"]
        assert geo.notices(now=2_000_000_000, demo=False) == []
