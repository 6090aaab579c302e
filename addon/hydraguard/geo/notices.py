"""What the proxy says about its GeoIP databases when it starts or takes new rules: each file's
build date and structure check, and warnings that must not go unnoticed (demo data, stale
databases). `hydraguard run` prints them on stderr before mitmdump starts; the addon logs the
ones not shown yet in this process (plain `mitmdump -s`, rules reloads)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .verify import age_days, build_date

if TYPE_CHECKING:
    from ..policy import Policy
    from . import GeoDatabases

_shown: set[str] = set()
_SHOWN_MAX = 256


def geo_lines(geo: GeoDatabases | None, now: float | None = None) -> list[str]:
    """One line per configured database role: file, type, build date, check result."""
    if geo is None:
        return []
    now = time.time() if now is None else now
    out = []
    for d in geo.describe():
        head = f"geoip {d['role']} {d['path']}"
        if not d["loaded"]:
            out.append(f"{head}: not loaded ({d['error']})")
            continue
        days = age_days(d["build_epoch"], now)
        demo = ", demo data" if d["demo"] else ""
        out.append(f"{head}: {d['database_type']}{demo}, built {build_date(d['build_epoch'])} "
                   f"({days:.0f} days ago), {d['verified']}")
    return out


def demo_consequence(policy: Policy, roles: set[str]) -> str:
    """What demo databases mean for these rules, for the warning."""
    parts = []
    if "location" in roles:
        refusing = [r.id for r in policy.rules if r.region is not None and not r.shadow
                    and r.region.no_record not in ("allow", "shadow")]
        if refusing:
            parts.append("region rule(s) " + ", ".join(refusing) + " refuse EVERY real client "
                         "(their no_record outcome)")
        else:
            parts.append("NO real client is refused by country or region")
    if roles - {"location"}:
        parts.append("ASN and anonymizer signals are never set for real clients")
    return "; ".join(parts)


def geo_warnings(policy: Policy, geo: GeoDatabases | None, now: float | None = None
                 ) -> list[str]:
    """Stale-database warnings, and one warning for demo databases saying what they mean for
    these rules (detected by their metadata, not their file names)."""
    if geo is None:
        return []
    out = geo.notices(now, demo=False)
    demo = [d for d in geo.describe() if d["demo"]]
    if demo:
        files = ", ".join(f"{d['path']} ({d['role']})" for d in demo)
        out.insert(0, f"DEMO GeoIP data: {files} hold fictional data for documentation "
                   "address ranges only; real client addresses have no record in them, so "
                   f"{demo_consequence(policy, {d['role'] for d in demo})}. Point `geoip:` at "
                   "real databases before serving real traffic (geoip/README.md).")
    return out


def not_shown_yet(lines: list[str]) -> list[str]:
    """The lines this process has not shown before (each is shown once)."""
    new = [x for x in lines if x not in _shown]
    if len(_shown) + len(new) > _SHOWN_MAX:
        _shown.clear()
    _shown.update(new)
    return new
