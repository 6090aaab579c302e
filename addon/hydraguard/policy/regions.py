"""Region rules: country allow/deny lists, ISO 3166-2 subdivisions and the odd cases
(private address, anycast, failed lookup, no record, unknown country) as explicit outcomes.
Codes are checked against ISO 3166 (policy/isocodes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .isocodes import IsoCode
from .schema import Bool, Field, Int, ListOf, Num, Str, Struct

OUTCOMES = ("action", "allow", "deny", "throttle", "shadow")
ANYCAST_OUTCOMES = ("check", *OUTCOMES)


def _codes(kind: str = "country") -> ListOf:
    return ListOf(IsoCode(kind), allow_scalar=True)


REGION = Struct(
    doc="Regional access restriction decided on the GeoIP `country` of the true client IP.",
    fields={
        "allow_countries": Field(
            _codes(), doc="Supported countries (ISO 3166-1 alpha-2): any other country "
            "takes the rule's action. Omit for a pure deny-list.", example=["US", "GB", "DE"]),
        "deny_countries": Field(_codes(), default=(), doc="Countries that take the action.",
                                example=["KP", "IR"]),
        "deny_subdivisions": Field(
            _codes("subdivision"), default=(),
            doc="ISO 3166-2 regions that take the action even when their country is allowed "
            "(needs a City database).",
            example=["UA-43", "UA-40", "UA-14", "UA-09"]),
        "unknown_country": Field(
            Str(choices=OUTCOMES), default="action",
            doc="The database has a record but no country for the address."),
        "no_record": Field(Str(choices=OUTCOMES), default="action",
                           doc="The database has no record (or no location database is open)."),
        "lookup_error": Field(
            Str(choices=OUTCOMES), default="action",
            doc="The location lookup failed (a damaged database file: logged as `geo.error`). "
            "Not the same as no record: the default refuses (the rule's action)."),
        "private": Field(Str(choices=OUTCOMES), default="allow",
                         doc="Private, loopback or reserved client address."),
        "anycast": Field(Str(choices=ANYCAST_OUTCOMES), default="check",
                         doc="Anycast network: 'check' decides on its country as usual."),
    },
)


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """Compiled region test. `outcome(geo)` -> an OUTCOMES value, or None (not refused)."""

    allow_countries: frozenset[str] | None
    deny_countries: frozenset[str]
    deny_subdivisions: frozenset[str]
    unknown_country: str
    no_record: str
    private: str
    anycast: str
    lookup_error: str = "action"

    def outcome(self, geo: Any) -> tuple[str, str] | None:
        """(outcome, why) when the rule refuses or has a special outcome; None to pass."""
        if geo is None or not (geo.found or geo.is_private or geo.location_error):
            return self._special(self.no_record, "no GeoIP record for the client address")
        if geo.is_private:
            return self._special(self.private, "private or reserved client address")
        if geo.location_error:
            return self._special(self.lookup_error, "GeoIP lookup of the client address failed")
        if geo.is_anycast and self.anycast != "check":
            return self._special(self.anycast, "anycast network")
        country = geo.country
        if country is None:
            return self._special(self.unknown_country, "client country unknown")
        for sub in geo.subdivisions:
            if sub in self.deny_subdivisions:
                return "action", f"region {sub} is not supported"
        if country in self.deny_countries:
            return "action", f"country {country} is not supported"
        if self.allow_countries is not None and country not in self.allow_countries:
            return "action", f"country {country} is not supported"
        return None

    @staticmethod
    def _special(outcome: str, why: str) -> tuple[str, str] | None:
        return None if outcome == "allow" else (outcome, why)


def compile_region(c: dict[str, Any]) -> RegionSpec:
    def up(xs: Any) -> frozenset[str]:
        return frozenset(x.upper() for x in xs or ())

    allow = c.get("allow_countries")
    return RegionSpec(
        allow_countries=None if allow is None else up(allow),
        deny_countries=up(c["deny_countries"]),
        deny_subdivisions=up(c["deny_subdivisions"]),
        unknown_country=c["unknown_country"], no_record=c["no_record"],
        private=c["private"], anycast=c["anycast"], lookup_error=c["lookup_error"],
    )


GEOIP = Struct(
    doc="MaxMind-format databases (paths relative to the rules file). Layouts are recognised "
    "from the files: GeoIP2/GeoLite2 City or Country, DB-IP Lite, IPinfo Lite, ASN, "
    "Anonymous IP.",
    fields={
        "location": Field(Str(), doc="Country/City database (decides `country`).",
                          example="../geoip/demo-city.mmdb"),
        "asn": Field(Str(), doc="ASN database."),
        "anonymous": Field(Str(), doc="Anonymous-IP database (proxy/VPN/Tor/hosting flags)."),
        "optional": Field(Bool(), default=False,
                          doc="true: start without a database that is missing or broken."),
        "reload_interval": Field(Num(min=0.1, max=3600), default=2.0,
                                 doc="Seconds between checks for changed database files."),
        "cache_size": Field(Int(min=0, max=10_000_000), default=65536,
                            doc="Lookups kept in the LRU cache (0: no cache)."),
        "verify_seconds": Field(
            Num(min=0, max=600), default=5.0,
            doc="Time budget, per file, of the structure check run before a database is used "
            "(start-up, `hydraguard check`, each new version): search tree scan and spread "
            "lookups always, then a walk decoding every record until done or out of time "
            "(0: no walk)."),
        "max_age_days": Field(
            Num(min=0, max=3650), default=45,
            doc="Warn (at start-up, in `hydraguard check`, on reload) when a database was "
            "built longer ago than this (0: never)."),
    },
)
