"""Record layouts hydraguard understands, how to recognise them, and how to decode them.

Recognised from ``metadata.database_type`` first, then from the shape of a sample record:

=================  ==============================================  =====================
layout             database_type examples                          roles it can serve
=================  ==============================================  =====================
geoip2-city        GeoIP2-City, GeoLite2-City, GeoIP2-Enterprise   location
geoip2-country     GeoIP2-Country, GeoLite2-Country                location
dbip               DBIP-Country-Lite, DBIP-City-Lite, DBIP-...     location
ipinfo             "ipinfo bundle_location_lite.mmdb" (IPinfo      location, asn
                   Lite), legacy "ipinfo ... country_asn.mmdb"
asn                GeoLite2-ASN, GeoIP2-ISP, DBIP-ASN-Lite         asn
anonymous          GeoIP2-Anonymous-IP, GeoIP-Anonymous-Plus       anonymous
auto               anything else: decoded per record by its shape  location, asn, anonymous
=================  ==============================================  =====================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

ROLES = ("location", "asn", "anonymous")

CITY = "geoip2-city"
COUNTRY = "geoip2-country"
DBIP = "dbip"
IPINFO = "ipinfo"
ASN = "asn"
ANONYMOUS = "anonymous"
AUTO = "auto"

LAYOUT_ROLES: dict[str, frozenset[str]] = {
    CITY: frozenset({"location"}),
    COUNTRY: frozenset({"location"}),
    DBIP: frozenset({"location"}),
    IPINFO: frozenset({"location", "asn"}),
    ASN: frozenset({"asn"}),
    ANONYMOUS: frozenset({"anonymous"}),
    AUTO: frozenset(ROLES),
}

# (country, registered, represented, represented_type, continent, subdivisions, anycast,
#  asn, as_org)
LocationFields = tuple[
    str | None, str | None, str | None, str | None, str | None, tuple[str, ...], bool,
    int | None, str | None,
]
AsnFields = tuple[int | None, str | None]
AnonFields = tuple[frozenset[str], int | None, str | None]


def layout_from_type(database_type: str) -> str | None:
    t = database_type.lower()
    if t.startswith("ipinfo"):
        return IPINFO
    if "anonymous" in t:
        return ANONYMOUS
    words = set(t.replace("_", "-").replace(".", "-").replace(" ", "-").split("-"))
    if words & {"asn", "isp"}:
        return ASN
    if t.startswith("dbip") and words & {"country", "city", "location"}:
        return DBIP
    if t.startswith(("geoip", "geolite")):
        if words & {"city", "enterprise"}:
            return CITY
        if "country" in words:
            return COUNTRY
    return None


def layout_from_record(record: Any) -> str | None:
    if not isinstance(record, Mapping):
        return None
    if "country_code" in record or isinstance(record.get("asn"), str):
        return IPINFO
    if "autonomous_system_number" in record:
        return ASN
    if any(isinstance(record.get(k), Mapping) for k in ("country", "registered_country",
                                                         "continent")):
        return CITY if "subdivisions" in record else COUNTRY
    if record and all(k.startswith("is_") or k in ("anonymizer_confidence", "provider_name",
                                                     "network_last_seen") for k in record):
        return ANONYMOUS
    return None


def detect_layout(database_type: str, sample: Any) -> str:
    """Layout name for a database; AUTO when neither its type nor a sample record tells."""
    return layout_from_type(database_type) or layout_from_record(sample) or AUTO


# --------------------------------------------------------------------------- decoders


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _asn_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value[:2].upper() == "AS" and value[2:].isdigit():
        return int(value[2:])
    return None


class RecordError(ValueError):
    """A record whose values have the wrong types: a damaged data section (the lookup fails)."""


def _code(name: str, value: Any) -> str | None:
    """An ISO code field as written in the record: a string or absent, nothing else."""
    if value is None or type(value) is str:
        return value
    raise RecordError(f"malformed record: {name} is a {type(value).__name__}")


def _part(rec: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    v = rec.get(key)
    if v is None or isinstance(v, Mapping):
        return v
    raise RecordError(f"malformed record: {key} is a {type(v).__name__}")


def location_nested(rec: Mapping[str, Any]) -> LocationFields:
    """GeoIP2/GeoLite2 City and Country, DB-IP (same nesting, fewer keys). Strict about
    types: a damaged record raises RecordError instead of deciding on garbage."""
    if not isinstance(rec, Mapping):
        raise RecordError(f"malformed record: a {type(rec).__name__}, not a map")
    c = _part(rec, "country")
    cc = _code("country.iso_code", c.get("iso_code")) if c else None
    r = _part(rec, "registered_country")
    rc = _code("registered_country.iso_code", r.get("iso_code")) if r else None
    p = _part(rec, "represented_country")
    if p:
        pc = _code("represented_country.iso_code", p.get("iso_code"))
        pt = _code("represented_country.type", p.get("type"))
    else:
        pc = pt = None
    cont = _part(rec, "continent")
    cont_code = _code("continent.code", cont.get("code")) if cont else None
    subs_raw = rec.get("subdivisions")
    subs: tuple[str, ...] = ()
    if subs_raw is not None and not isinstance(subs_raw, list):
        raise RecordError(f"malformed record: subdivisions is a {type(subs_raw).__name__}")
    if subs_raw and cc:
        out = []
        for s in subs_raw:
            if not isinstance(s, Mapping):
                raise RecordError("malformed record: a subdivision is not a map")
            code = _code("subdivisions.iso_code", s.get("iso_code"))
            if code:  # DB-IP City Lite has names only
                out.append(code if "-" in code else f"{cc}-{code}")
        subs = tuple(out)
    t = _part(rec, "traits")
    if t:
        anycast = t.get("is_anycast") is True
        asn = t.get("autonomous_system_number")  # Enterprise/Insights-style traits
        org = t.get("autonomous_system_organization")
        asn = asn if type(asn) is int else None
        org = org if type(org) is str else None
    else:
        anycast = False
        asn = org = None
    return cc, rc, pc, pt, cont_code, subs, anycast, asn, org


def location_flat(rec: Mapping[str, Any]) -> LocationFields:
    """IPinfo Lite (country_code/continent_code) and legacy IPinfo (country = ISO code)."""
    cc = _s(rec.get("country_code"))
    if cc is None:
        legacy = _s(rec.get("country"))
        cc = legacy if legacy and len(legacy) == 2 else None
    cont = _s(rec.get("continent_code"))
    if cont is None:
        legacy = _s(rec.get("continent"))
        cont = legacy if legacy and len(legacy) == 2 else None
    return cc, None, None, None, cont, (), False, _asn_int(rec.get("asn")), _s(rec.get("as_name"))


def location_auto(rec: Mapping[str, Any]) -> LocationFields:
    if "country_code" in rec or isinstance(rec.get("asn"), str):
        return location_flat(rec)
    return location_nested(rec)


def asn_maxmind(rec: Mapping[str, Any]) -> AsnFields:
    return (_asn_int(rec.get("autonomous_system_number")),
            _s(rec.get("autonomous_system_organization")))


def asn_flat(rec: Mapping[str, Any]) -> AsnFields:
    return _asn_int(rec.get("asn")), _s(rec.get("as_name"))


def asn_auto(rec: Mapping[str, Any]) -> AsnFields:
    if "autonomous_system_number" in rec:
        return asn_maxmind(rec)
    if "asn" in rec:
        return asn_flat(rec)
    t = rec.get("traits")
    if isinstance(t, Mapping):
        return asn_maxmind(t)
    return None, None


_FLAG_SETS: dict[tuple[str, ...], frozenset[str]] = {}


def anonymous(rec: Mapping[str, Any]) -> AnonFields:
    """GeoIP2 Anonymous IP / GeoIP Anonymous Plus: boolean keys present only when true."""
    key = tuple([k for k, v in rec.items() if v is True])  # the is_* flags
    flags = _FLAG_SETS.get(key)
    if flags is None:
        flags = _FLAG_SETS.setdefault(key, frozenset(key))
    conf = rec.get("anonymizer_confidence")
    return flags, conf if isinstance(conf, int) else None, _s(rec.get("provider_name"))


Decoder = Callable[[Mapping[str, Any]], Any]

DECODERS: dict[tuple[str, str], Decoder] = {
    ("location", CITY): location_nested,
    ("location", COUNTRY): location_nested,
    ("location", DBIP): location_nested,
    ("location", IPINFO): location_flat,
    ("location", AUTO): location_auto,
    ("asn", ASN): asn_maxmind,
    ("asn", IPINFO): asn_flat,
    ("asn", AUTO): asn_auto,
    ("anonymous", ANONYMOUS): anonymous,
    ("anonymous", AUTO): anonymous,
}
