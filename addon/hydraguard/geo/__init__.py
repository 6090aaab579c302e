"""GeoIP for hydraguard: country / subdivision / ASN / anonymizer facts about a client IP.

    from hydraguard.geo import GeoDatabases
    geo = GeoDatabases({"location": "geoip/demo-city.mmdb", "asn": "geoip/demo-asn.mmdb",
                        "anonymous": "geoip/demo-anonymous-ip.mmdb"})
    info = geo.lookup("192.0.2.130")   # GeoInfo(country="UA", subdivisions=("UA-43",), ...)

See geoip/README.md for the supported databases and layouts.
"""

from .info import PRIVATE, UNKNOWN, GeoInfo
from .layouts import LAYOUT_ROLES, ROLES, detect_layout
from .opening import GeoDatabaseError, open_checked
from .readers import GeoDatabases

__all__ = [
    "LAYOUT_ROLES",
    "PRIVATE",
    "ROLES",
    "UNKNOWN",
    "GeoDatabaseError",
    "GeoDatabases",
    "GeoInfo",
    "detect_layout",
    "open_checked",
]
