"""is_private_address / address parsing, cross-checked with ipaddress via hypothesis."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydraguard.geo import is_private_address, parse_ip
from hydraguard.geo.addresses import _V4_RANGES, _V6_RANGES, classify

V4_NETS = [ipaddress.ip_network(r) for r in _V4_RANGES]
V6_NETS = [ipaddress.ip_network(r) for r in _V6_RANGES]


def reference(addr) -> bool:
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in n for n in (V4_NETS if addr.version == 4 else V6_NETS))


@pytest.mark.parametrize("ip", ["10.0.0.1", "172.31.255.255", "192.168.0.1", "127.0.0.1",
                                "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.251",
                                "239.255.255.250", "240.0.0.1", "255.255.255.255",
                                "198.18.0.1", "192.0.0.8", "::", "::1", "fe80::1",
                                "fe80::1%eth0", "fc00::1", "fdff::1", "ff02::fb",
                                "::ffff:192.168.1.1", "::ffff:127.0.0.1", "100::1"])
def test_private(ip):
    assert is_private_address(ip)
    assert classify(ip)[1]


@pytest.mark.parametrize("ip", ["192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1",
                                "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1",
                                "2606:4700::1111", "::ffff:192.0.2.1", "11.0.0.0",
                                "223.255.255.255"])
def test_not_private_documentation_ranges_are_looked_up(ip):
    assert not is_private_address(ip)
    assert not classify(ip)[1]


def test_mapped_is_unmapped():
    assert parse_ip("::ffff:192.0.2.1") == ipaddress.IPv4Address("192.0.2.1")
    assert classify("::ffff:192.0.2.1") == ("192.0.2.1", False)
    assert classify("fe80::1%eth0") == ("fe80::1", True)


@pytest.mark.parametrize("bad", ["", "x", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1.2.3.04",
                                 "::g", "1.2.3.4 ", "1.2.3.4\x00", 1234, None, b"1.2.3.4"])
def test_invalid(bad):
    with pytest.raises(ValueError):
        is_private_address(bad)
    with pytest.raises(ValueError):
        classify(bad)


@given(st.ip_addresses())
def test_matches_reference(addr):
    want = reference(addr)
    assert is_private_address(addr) is want
    assert is_private_address(str(addr)) is want
    key, private = classify(str(addr))
    assert private is want
    if addr.version == 6 and addr.ipv4_mapped is not None:
        assert key == str(addr.ipv4_mapped)


@given(st.integers(0, 2**32 - 1))
def test_v4_mapped_agrees(n):
    v4 = ipaddress.IPv4Address(n)
    assert is_private_address(f"::ffff:{v4}") is is_private_address(v4) is reference(v4)
