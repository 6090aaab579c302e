"""Micro-benchmark of hydraguard.geo lookups on the demo databases.

    .venv/bin/python bench/bench_geo.py [--n 20000]

Prints microseconds per lookup: raw maxminddb (sum of the three databases), and
GeoDatabases.lookup on a cache miss (every address new) and on a cache hit, for IPv4 and IPv6.
Demo records are small (2 languages); real GeoIP2-City records carry ~8 languages and decode
slower, so expect larger raw and miss figures with production files.
"""

from __future__ import annotations

import argparse
import ipaddress
import time
from pathlib import Path

import maxminddb

from hydraguard.geo import GeoDatabases

GEOIP = Path(__file__).resolve().parents[1] / "geoip"
SETS = {
    "city+asn+anon": {"location": "demo-city.mmdb", "asn": "demo-asn.mmdb",
                      "anonymous": "demo-anonymous-ip.mmdb"},
    "country+asn+anon": {"location": "demo-country.mmdb", "asn": "demo-asn.mmdb",
                         "anonymous": "demo-anonymous-ip.mmdb"},
    "ipinfo-lite": {"location": "demo-ipinfo-lite.mmdb"},
}


def addresses(version: int, n: int) -> list[str]:
    """n addresses cycling through networks that have records in every database, so the full
    decode path is timed (misses are measured with the cache disabled)."""
    if version == 4:
        nets = ["192.0.2.0/28", "192.0.2.128/28", "198.51.100.96/27", "198.51.100.160/28"]
    else:
        nets = ["2001:db8:1::/48", "2001:db8:43::/48", "2001:db8:600::/48", "2001:db8:700::/48"]
    parsed = [ipaddress.ip_network(x) for x in nets]
    return [str(parsed[i % 4][(i // 4) % 16]) for i in range(n)]


def per_call_us(fn, items) -> float:
    t0 = time.perf_counter()
    for x in items:
        fn(x)
    return (time.perf_counter() - t0) / len(items) * 1e6


def best(fn, items, repeat: int = 7) -> float:
    return min(per_call_us(fn, items) for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    rows = []
    for label, files in SETS.items():
        paths = {role: GEOIP / f for role, f in files.items()}
        readers = [maxminddb.open_database(str(p), maxminddb.MODE_AUTO)
                   for p in dict.fromkeys(paths.values())]
        for version in (4, 6):
            ips = addresses(version, args.n)

            def raw(ip, readers=readers):
                for r in readers:
                    r.get(ip)

            raw_us = best(raw, ips)
            geo_nocache = GeoDatabases(paths, cache_size=0)
            miss_us = best(geo_nocache.lookup, ips)
            geo = GeoDatabases(paths)
            hot = ips[:1000]
            for ip in hot:
                geo.lookup(ip)
            hit_us = best(geo.lookup, hot * (args.n // 1000))
            rows.append((label, f"IPv{version}", raw_us, miss_us, hit_us))
            geo.close()
            geo_nocache.close()
        for r in readers:
            r.close()
    print(f"maxminddb {maxminddb.__version__}, extension: "
          f"{type(maxminddb.open_database(str(GEOIP / 'demo-asn.mmdb'))).__module__}")
    print(f"{'databases':<18} {'ip':<5} {'raw maxminddb':>14} {'lookup miss':>12} "
          f"{'lookup hit':>11}   (µs per lookup, best of 7)")
    for label, ver, raw_us, miss_us, hit_us in rows:
        print(f"{label:<18} {ver:<5} {raw_us:>14.2f} {miss_us:>12.2f} {hit_us:>11.2f}")
    geo_check(args.n)


def geo_check(n: int) -> None:
    """The whole geo check per request as the pipeline runs it: lookup of the client address
    (an ipaddress object) plus the region rule of rules/examples/supported-countries.yaml."""
    from hydraguard.decide import decide
    from hydraguard.facts import Facts
    from hydraguard.policy import load_policy

    policy = load_policy(GEOIP.parent / "rules/examples/supported-countries.yaml")
    city = {"location": GEOIP / "demo-city.mmdb"}
    city_asn = {**city, "asn": GEOIP / "demo-asn.mmdb"}
    print("\nwhole geo check per request (lookup + region rule), µs, best of 7")
    for label, paths, cache in (("city, cache miss", city, 0),
                                ("city+asn, cache miss", city_asn, 0),
                                ("city+asn, cache hit", city_asn, 65536)):
        geo = GeoDatabases(paths, cache_size=cache)
        ips = [ipaddress.ip_address(x) for x in addresses(4, n)]
        facts = Facts("r", "POST", "/v1/messages", None, None, api="anthropic.messages")

        def check(ip, geo=geo, facts=facts):
            facts.client_ip = ip
            facts.geo = geo.lookup(ip)
            return decide(facts, policy)

        for ip in ips[:1000]:
            check(ip)
        print(f"  {label:<21} {best(check, ips):.2f}")
        geo.close()


if __name__ == "__main__":
    main()
