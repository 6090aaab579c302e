"""GeoInfo: what the GeoIP databases say about one client address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOCATION_FAILED = "location lookup failed"


@dataclass(frozen=True, slots=True)
class GeoInfo:
    """Result of :meth:`hydraguard.geo.GeoDatabases.lookup`. Every field has a "nothing known"
    default, so ``GeoInfo()`` equals :data:`UNKNOWN` and tests can build one by keyword."""

    found: bool = False  # a record exists for this IP in the location db
    country: str | None = None  # ISO 3166-1 alpha-2 of `country`: the decision field
    registered_country: str | None = None
    represented_country: str | None = None
    represented_type: str | None = None  # e.g. "military"
    continent: str | None = None  # two-letter continent code, e.g. "EU"
    subdivisions: tuple[str, ...] = ()  # full ISO 3166-2, largest first, e.g. ("UA-43",)
    is_anycast: bool = False
    is_private: bool = False  # private/loopback/link-local/reserved/...: never looked up
    asn: int | None = None
    as_org: str | None = None
    anonymous: frozenset[str] = frozenset()  # e.g. {"is_anonymous", "is_public_proxy"}
    anonymizer_confidence: int | None = None
    # additions beyond the agreed interface (keyword-only use recommended)
    provider_name: str | None = None  # anonymous db: VPN / proxy provider
    # A lookup that failed (damaged database): "<role> lookup failed: <why>", several joined
    # by "; " in role order (location, asn, anonymous). Not the same as "no record".
    error: str | None = None

    @property
    def location_error(self) -> bool:
        """The location database's lookup failed: country and subdivisions are not known
        (region rules take their `lookup_error` outcome)."""
        return self.error is not None and self.error.startswith(LOCATION_FAILED)

    @property
    def country_mismatch(self) -> bool:
        """country and registered_country both known and different (a weak signal)."""
        return (
            self.country is not None
            and self.registered_country is not None
            and self.country != self.registered_country
        )

    def to_log(self) -> dict[str, Any]:
        """JSON-ready dict for the decision log. The decision fields (country, registered and
        represented country, subdivisions) are always present, null when unknown; other
        empty/false fields are left out."""
        if self.is_private:
            return {"private": True}
        out: dict[str, Any] = {
            "found": self.found,
            "country": self.country,
            "registered_country": self.registered_country,
            "represented_country": self.represented_country,
            "subdivisions": list(self.subdivisions),
        }
        if self.represented_type:
            out["represented_type"] = self.represented_type
        if self.country_mismatch:
            out["country_mismatch"] = True
        if self.continent is not None:
            out["continent"] = self.continent
        if self.is_anycast:
            out["anycast"] = True
        if self.asn is not None:
            out["asn"] = self.asn
        if self.as_org:
            out["as_org"] = self.as_org
        if self.anonymous:
            out["anonymous"] = sorted(self.anonymous)
        if self.anonymizer_confidence is not None:
            out["anonymizer_confidence"] = self.anonymizer_confidence
        if self.provider_name:
            out["provider_name"] = self.provider_name
        if self.error:
            out["error"] = self.error
        return out


UNKNOWN = GeoInfo()
PRIVATE = GeoInfo(is_private=True)
