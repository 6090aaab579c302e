#!/usr/bin/env python3
"""Build hydraguard's demo GeoIP databases from geoip/demo-data.yaml.

    python geoip/build.py                 # rebuild geoip/demo-*.mmdb in place
    python geoip/build.py --out DIR       # build into DIR instead
    python geoip/build.py --check         # exit 1 if the committed files are stale

Each database is written in the record layout of the real product it stands in for
(GeoIP2 City, GeoLite2 Country, DB-IP Country Lite, IPinfo Lite, GeoLite2 ASN,
GeoIP Anonymous Plus), as an IPv6 tree with IPv4 under ::/96 like MaxMind's own files.
Output is byte-deterministic: the build time comes from `build_epoch` in the YAML, and every
database is read back with maxminddb and compared, type for type, with the intended records.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import maxminddb
import yaml
from mmdb_writer import MmdbBaseType, MmdbU16, MmdbU32, MMDBWriter
from netaddr import IPSet

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "demo-data.yaml"

# file name -> (database_type, description, record builder name)
DATABASES: dict[str, tuple[str, str, str]] = {
    "demo-city.mmdb": ("GeoIP2-City", "GeoIP2 City layout", "city"),
    "demo-country.mmdb": ("GeoLite2-Country", "GeoLite2 Country layout", "country"),
    "demo-dbip-country.mmdb": ("DBIP-Country-Lite", "DB-IP IP to Country Lite layout", "dbip"),
    "demo-ipinfo-lite.mmdb": ("ipinfo bundle_location_lite.mmdb", "IPinfo Lite layout", "ipinfo"),
    "demo-asn.mmdb": ("GeoLite2-ASN", "GeoLite2 ASN layout", "asn"),
    "demo-anonymous-ip.mmdb": (
        "GeoIP-Anonymous-Plus",
        "GeoIP Anonymous Plus layout (Anonymous IP flags + confidence/provider)",
        "anonymous",
    ),
}

ANON_FLAGS = (
    "is_anonymous",
    "is_anonymous_vpn",
    "is_hosting_provider",
    "is_public_proxy",
    "is_residential_proxy",
    "is_tor_exit_node",
)


class _Writer(MMDBWriter):
    """MMDBWriter with a fixed build_epoch (upstream uses time.time())."""

    def __init__(self, *args: Any, build_epoch: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._build_epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        meta["build_epoch"] = self._build_epoch
        return meta


# --------------------------------------------------------------------------- source


def load_source(path: str | os.PathLike[str] = SOURCE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        src = yaml.safe_load(fh)
    _validate_source(src)
    return src


def _validate_source(src: Mapping[str, Any]) -> None:
    seen: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in src["networks"]:
        net = ipaddress.ip_network(entry["network"])
        for other in seen:
            if net.overlaps(other):
                raise ValueError(f"{net} overlaps {other}")
        seen.append(net)
        for key in ("country", "registered_country"):
            cc = entry.get(key)
            if cc is not None and cc not in src["countries"]:
                raise ValueError(f"{net}: unknown {key} {cc!r}")
        for sub in entry.get("subdivisions") or ():
            if f"{entry['country']}-{sub}" not in src["subdivisions"]:
                raise ValueError(f"{net}: unknown subdivision {entry['country']}-{sub}")
        if entry.get("asn") is not None and entry["asn"] not in src["asns"]:
            raise ValueError(f"{net}: unknown asn {entry['asn']}")
        for flag, value in (entry.get("anonymous") or {}).items():
            if flag in ANON_FLAGS and value is not True:
                raise ValueError(f"{net}: anonymous flags are only written when true")
            if flag not in (*ANON_FLAGS, "confidence", "provider", "last_seen"):
                raise ValueError(f"{net}: unknown anonymous key {flag!r}")


# --------------------------------------------------------------------------- records


def _names(d: Mapping[str, Any], langs: list[str]) -> dict[str, str]:
    return {lang: d["names"][lang] for lang in langs if lang in d["names"]}


def _country(src: Mapping[str, Any], iso: str) -> dict[str, Any]:
    c = src["countries"][iso]
    rec: dict[str, Any] = {"geoname_id": MmdbU32(c["geoname_id"])}
    if c.get("eu"):
        rec["is_in_european_union"] = True
    rec["iso_code"] = iso
    rec["names"] = _names(c, src["languages"])
    return rec


def _continent(src: Mapping[str, Any], iso: str) -> dict[str, Any]:
    code = src["countries"][iso]["continent"]
    c = src["continents"][code]
    return {
        "code": code,
        "geoname_id": MmdbU32(c["geoname_id"]),
        "names": _names(c, src["languages"]),
    }


def _geoip2(src: Mapping[str, Any], e: Mapping[str, Any], *, city: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    cc = e.get("country")
    reg = e.get("registered_country", cc)
    if city and e.get("city"):
        rec["city"] = {"names": {"en": e["city"]}}
    if cc:
        rec["continent"] = _continent(src, cc)
        rec["country"] = _country(src, cc)
    if reg:
        rec["registered_country"] = _country(src, reg)
    rep = e.get("represented_country")
    if rep:
        rec["represented_country"] = {**_country(src, rep["iso"]), "type": rep["type"]}
    if city and e.get("subdivisions"):
        subs = []
        for code in e["subdivisions"]:
            s = src["subdivisions"][f"{cc}-{code}"]
            subs.append(
                {
                    "geoname_id": MmdbU32(s["geoname_id"]),
                    "iso_code": code,
                    "names": _names(s, src["languages"]),
                }
            )
        rec["subdivisions"] = subs
    if e.get("anycast"):
        rec["traits"] = {"is_anycast": True}
    return rec


def _record(kind: str, src: Mapping[str, Any], e: Mapping[str, Any]) -> dict[str, Any] | None:
    located = e.get("location", True)
    cc = e.get("country")
    if kind in ("city", "country"):
        return (_geoip2(src, e, city=kind == "city") or None) if located else None
    if kind == "dbip":  # DB-IP Lite: continent + country only, no registered_country
        if not located or not cc:
            return None
        return {"continent": _continent(src, cc), "country": _country(src, cc)}
    if kind == "ipinfo":  # flat, all strings
        if not located:
            return None
        rec: dict[str, Any] = {}
        if e.get("asn") is not None:
            a = src["asns"][e["asn"]]
            rec.update(as_domain=a["domain"], as_name=a["org"], asn=f"AS{e['asn']}")
        if cc:
            cont = src["countries"][cc]["continent"]
            rec.update(
                continent=src["continents"][cont]["names"]["en"],
                continent_code=cont,
                country=src["countries"][cc]["names"]["en"],
                country_code=cc,
            )
        return rec or None
    if kind == "asn":
        if e.get("asn") is None:
            return None
        return {
            "autonomous_system_number": MmdbU32(e["asn"]),
            "autonomous_system_organization": src["asns"][e["asn"]]["org"],
        }
    if kind == "anonymous":
        anon = e.get("anonymous")
        if not anon:
            return None
        rec = {}
        if "confidence" in anon:
            rec["anonymizer_confidence"] = MmdbU16(anon["confidence"])
        rec.update({f: True for f in ANON_FLAGS if anon.get(f)})
        if "last_seen" in anon:
            rec["network_last_seen"] = str(anon["last_seen"])
        if "provider" in anon:
            rec["provider_name"] = anon["provider"]
        return rec
    raise ValueError(kind)


def records(src: Mapping[str, Any], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(network, record) pairs of one database kind, in source order."""
    for e in src["networks"]:
        rec = _record(kind, src, e)
        if rec is not None:
            yield e["network"], rec


def plain(value: Any) -> Any:
    """The value as maxminddb will decode it (unwraps MmdbU16/MmdbU32)."""
    if isinstance(value, MmdbBaseType):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- build


# hydraguard recognises its demo databases by this text in the metadata description (not by
# their file names) and warns at start-up that real addresses have no record in them.
DEMO_MARKER = "hydraguard demo"


def build_one(src: Mapping[str, Any], name: str, out_dir: Path, *,
              description: str | None = None) -> Path:
    """Build one database. `description` replaces the demo description (tests use it to build
    databases hydraguard does not take for demo data)."""
    db_type, desc, kind = DATABASES[name]
    writer = _Writer(
        ip_version=6,
        ipv4_compatible=True,
        database_type=db_type,
        languages=list(src["languages"]) if kind in ("city", "country", "dbip") else ["en"],
        description=description
        or f"{DEMO_MARKER}: {desc} (fictional data, documentation ranges only)",
        build_epoch=int(src["build_epoch"]),
    )
    for network, rec in records(src, kind):
        writer.insert_network(IPSet([network]), rec)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
    os.close(fd)
    try:
        writer.to_db_file(tmp)
        verify(src, name, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)  # atomic: a running hydraguard never sees a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _same(a: Any, b: Any) -> bool:
    """Equality that also requires equal types (True must not decode as 1 or vice versa)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def verify(src: Mapping[str, Any], name: str, path: str | os.PathLike[str]) -> None:
    """Read the database back and check every network's first and last address."""
    db_type, _, kind = DATABASES[name]
    with maxminddb.open_database(os.fspath(path), maxminddb.MODE_AUTO) as reader:
        meta = reader.metadata()
        if meta.database_type != db_type or meta.build_epoch != int(src["build_epoch"]):
            raise AssertionError(f"{name}: bad metadata {meta}")
        for network, rec in records(src, kind):
            net = ipaddress.ip_network(network)
            want = plain(rec)
            for ip in (net[0], net[-1]):
                got = reader.get(ip)
                if not _same(got, want):
                    raise AssertionError(f"{name}: {ip}: got {got!r}, want {want!r}")


def build_all(out_dir: str | os.PathLike[str] = HERE, source: str | os.PathLike[str] = SOURCE
              ) -> list[Path]:
    src = load_source(source)
    return [build_one(src, name, Path(out_dir)) for name in DATABASES]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=str(HERE), help="output directory (default: geoip/)")
    ap.add_argument("--source", default=str(SOURCE), help="YAML source (default: demo-data.yaml)")
    ap.add_argument("--check", action="store_true",
                    help="build into a temp dir and compare with the files in --out")
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            stale = [
                p.name for p in build_all(tmp, args.source)
                if not (Path(args.out) / p.name).is_file()
                or (Path(args.out) / p.name).read_bytes() != p.read_bytes()
            ]
        if stale:
            print("stale or missing: " + ", ".join(stale) + " (run python geoip/build.py)")
            return 1
        print("demo databases are up to date")
        return 0
    for p in build_all(args.out, args.source):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
