"""hydraguard.addresses: parsing, private ranges, prefixes, CidrSet, Forwarded / XFF hops.

Private ranges are cross-checked with ipaddress, CidrSet with brute force (hypothesis).
List-file parsing: test_addresses_lists.py.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydraguard.addresses import (
    CidrSet,
    classify,
    format_forwarded,
    forwarded_hops,
    header_hops,
    ip_to_int,
    is_private_address,
    node_address,
    parse_forwarded,
    parse_ip,
    parse_xff,
    prefix,
    prefix_int,
    split_node,
    trusted_walk,
)
from hydraguard.addresses.core import _V4_RANGES, _V6_RANGES

ipa = ipaddress.ip_address


# -- parsing ---------------------------------------------------------------------------------
def test_parse_ip_forms():
    assert parse_ip('"[2001:db8::5]:80"') == ipa("2001:db8::5")
    assert parse_ip("::ffff:192.0.2.1") == ipa("192.0.2.1")
    assert parse_ip("_hidden") is None
    assert forwarded_hops("by=x, For=1.2.3.4;proto=https") == ["", "1.2.3.4"]


def test_parse_ip_tokens_and_objects():
    assert parse_ip(" 192.0.2.1:443 ") == ipa("192.0.2.1")
    assert parse_ip("fe80::1%eth0") == ipa("fe80::1")
    assert parse_ip("[::1]") == ipa("::1")
    assert parse_ip(ipa("::ffff:10.0.0.1")) == ipa("10.0.0.1")  # objects are unmapped too
    assert parse_ip(ipa("2001:db8::1")) == ipa("2001:db8::1")
    for bad in ("", "unknown", "1.2.3.04", "1.2.3.4.5", "::g", "1.2.3.4\x00", 42, None, b"1234"):
        assert parse_ip(bad) is None  # type: ignore[arg-type]


@given(st.ip_addresses(), st.sampled_from(["{}", "[{}]", "[{}]:443", '"{}"']))
def test_parse_ip_agrees_with_ipaddress(addr, form):
    want = addr.ipv4_mapped if addr.version == 6 and addr.ipv4_mapped else addr
    assert parse_ip(form.format(addr)) == want
    if addr.version == 4:
        assert parse_ip(f"{addr}:8080") == addr


# -- private ranges --------------------------------------------------------------------------
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


# -- prefixes --------------------------------------------------------------------------------
def test_prefix_defaults_v4_24_v6_64():
    assert prefix(ipa("192.0.2.77")) == "192.0.2.0/24"
    assert prefix(ipa("2001:db8:1:2::5")) == "2001:db8:1:2::/64"
    assert prefix(None) is None
    assert prefix(ipa("203.0.113.9"), 16) == "203.0.0.0/16"
    assert prefix(ipa("2001:db8:1:2::5"), 48) == "2001:db8:1::/48"
    assert prefix_int(4, 0x0A0F4001) == 0x0A0F40  # the behaviour counters' /24 key
    assert prefix_int(6, (7 << 64) | 5) == 7
    assert prefix_int(4, 0x0A0F4001, 32) == 0x0A0F4001 and prefix_int(6, 123, 0) == 0
    with pytest.raises(ValueError):
        prefix_int(4, 1, 33)


@given(st.ip_addresses(), st.integers(0, 128))
def test_prefix_agrees_with_ipaddress(addr, bits):
    bits = min(bits, addr.max_prefixlen)
    assert prefix(addr, bits) == str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))
    default = 24 if addr.version == 4 else 64
    assert prefix(addr) == prefix(addr, default)


# -- CidrSet ---------------------------------------------------------------------------------
def test_cidrset_basics() -> None:
    s = CidrSet(["192.0.2.0/24", "192.0.3.0/24", "10.0.0.0/8", "2001:db8::/32", "bad"])
    assert s.contains("192.0.2.1") and s.contains("192.0.3.255") and "10.255.255.255" in s
    assert not s.contains("192.0.4.0") and not s.contains("9.255.255.255")
    assert s.contains("2001:db8:ffff::1") and not s.contains("2001:db9::")
    assert s.contains("::ffff:192.0.2.9")  # IPv4-mapped counts as IPv4
    assert s.contains(ipaddress.ip_address("10.1.2.3")) and s.contains(bytes([10, 0, 0, 1]))
    assert s.contains("2001:db8::1%eth0")
    for bad in ("", "x", "300.1.1.1", None, 42, "1.2.3", "::gg"):
        assert not s.contains(bad)
    assert len(s) == 4 and s.ranges == 3  # the two adjacent /24 merge
    assert CidrSet(["::ffff:10.0.0.0/104"]).contains("10.2.3.4")
    assert not CidrSet().contains("1.2.3.4")


def _mapped_to_v4(a: ipaddress.IPv4Address | ipaddress.IPv6Address):
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_v4_nets = st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(
    lambda t: ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False)
)
_v6_nets = (
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128))
    .map(lambda t: ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False))
    .filter(lambda n: not n.overlaps(_MAPPED))
)  # mapped space is looked up as IPv4


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(_v4_nets, _v6_nets), max_size=30),
    st.lists(st.ip_addresses(), min_size=1, max_size=30),
)
def test_cidrset_agrees_with_brute_force(nets: list, probes: list) -> None:
    s = CidrSet(nets)
    for net in nets:  # also probe the edges of every network
        probes += [net.network_address, net.broadcast_address]
        if int(net.broadcast_address) < (2**32 - 1 if net.version == 4 else 2**128 - 1):
            probes.append(net.broadcast_address + 1)
        if net.version == 4:
            probes.append(ipaddress.ip_address(f"::ffff:{net.network_address}"))
    for p in probes:
        q = _mapped_to_v4(p)
        expected = any(q in n for n in nets if n.version == q.version)
        assert s.contains(str(p)) == expected, (p, nets)
        assert s.contains(p) == expected


def test_ip_to_int() -> None:
    assert ip_to_int("1.2.3.4") == (4, 0x01020304)
    assert ip_to_int("::ffff:1.2.3.4") == (4, 0x01020304)
    assert ip_to_int("::1") == (6, 1)
    assert ip_to_int("1.2.3.4.5") is None


# -- trusted hop walk ------------------------------------------------------------------------
TRUSTED = CidrSet(["10.0.0.0/8", "::1/128"])


@pytest.mark.parametrize(("hops", "client", "stop"), [
    (["6.6.6.6", "198.51.100.9", "10.1.1.1"], "198.51.100.9", 1),  # spoofed leftmost entry
    (["10.2.2.2", "10.1.1.1"], "10.2.2.2", -1),  # every hop trusted: leftmost reached
    (["garbage", "10.1.1.1"], "10.1.1.1", 0),  # a non-address stops at the last good hop
    (["1.2.3.4", "unknown"], None, 1),  # nothing usable on the right
    (['"[2001:db8::1]:4711"', "[::1]:80"], "2001:db8::1", 0),
    ([], None, -1),
])
def test_trusted_walk(hops, client, stop):
    assert trusted_walk(hops, TRUSTED) == (ipa(client) if client else None, stop)


def test_header_hops():
    assert header_hops("x-forwarded-for", "1.2.3.4 , ,5.6.7.8") == ["1.2.3.4", "", "5.6.7.8"]
    assert header_hops("forwarded", 'for="[::1]:80";by=x, ,proto=http, for=1.1.1.1') == [
        "[::1]:80", "", "", "1.1.1.1"]
    # every comma splits: a client's unbalanced quote cannot swallow what proxies appended
    assert header_hops("forwarded", 'for="6.6.6.6, for=1.2.3.4') == ['"6.6.6.6', "1.2.3.4"]
    assert header_hops("forwarded", 'for="a,b", for=2.2.2.2') == ['"a', "", "2.2.2.2"]


# -- Forwarded / X-Forwarded-For -------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 7239 section 4 and 7.5 examples
        ('for="_gazonk"', [{"for": "_gazonk"}]),
        ('For="[2001:db8:cafe::17]:4711"', [{"for": "[2001:db8:cafe::17]:4711"}]),
        (
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}],
        ),
        ("for=192.0.2.43, for=198.51.100.17", [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]),
        (
            "for=unknown, for=192.0.2.1;host=example.com",
            [{"for": "unknown"}, {"for": "192.0.2.1", "host": "example.com"}],
        ),
        ('for="[2001:db8::1]";HOST="a,b;c"', [{"for": "[2001:db8::1]", "host": "a,b;c"}]),
        ('for="a\\"b\\\\c"', [{"for": 'a"b\\c'}]),
        ("for=1.2.3.4;for=5.6.7.8", [{"for": "1.2.3.4"}]),  # duplicate: first wins
        (" ; , garbage , =x, for=1.1.1.1 ", [{"for": "1.1.1.1"}]),
        ('for="unterminated', [{"for": '"unterminated'}]),
        ("", []),
    ],
)
def test_parse_forwarded(value: str, expected: list[dict[str, str]]) -> None:
    assert parse_forwarded(value) == expected


def test_nodes() -> None:
    assert split_node("[2001:db8:cafe::17]:4711") == ("2001:db8:cafe::17", "4711")
    assert split_node("192.0.2.1:80") == ("192.0.2.1", "80")
    assert split_node("2001:db8::1") == ("2001:db8::1", None)
    assert split_node("_hidden") == ("_hidden", None)
    assert node_address("[2001:DB8::1]:80") == "2001:db8::1"
    assert node_address("192.0.2.1:80") == "192.0.2.1"
    assert node_address("unknown") is None
    assert node_address("_obf") is None
    assert node_address("fe80::1%eth0") == "fe80::1"


def test_parse_xff() -> None:
    assert parse_xff("203.0.113.7, 198.51.100.1:8080 ,[2001:db8::1]:443, unknown,, ") == [
        "203.0.113.7",
        "198.51.100.1",
        "2001:db8::1",
        "unknown",
    ]
    assert parse_xff("") == []
    assert parse_xff(",".join(["1.1.1.1"] * 1000)) == ["1.1.1.1"] * 64  # capped


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_parsers_never_raise(text: str) -> None:
    for el in parse_forwarded(text):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in el.items())
    assert all(isinstance(x, str) and x for x in parse_xff(text))


_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-._~!#$%&'*+^`|",
    min_size=1,
    max_size=12,
)
_ip4 = st.ip_addresses(v=4).map(str)
_ip6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
_node = st.one_of(
    _ip4,
    _ip6,
    st.tuples(_ip6, st.integers(1, 65535)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(_ip4, st.integers(1, 65535)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.just("unknown"),
    _token.map(lambda t: "_" + t),
)
_value = st.one_of(_node, _token, st.text(max_size=20))
_element = st.dictionaries(
    st.sampled_from(["for", "by", "host", "proto", "x-ext"]),
    st.one_of(_node, _value),
    min_size=1,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_element, max_size=6))
def test_forwarded_round_trip(elements: list[dict[str, str]]) -> None:
    assert parse_forwarded(format_forwarded(elements)) == elements


@settings(max_examples=300, deadline=None)
@given(st.lists(st.ip_addresses(), min_size=1, max_size=10), st.booleans())
def test_xff_round_trip(
    addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address], spaces: bool
) -> None:
    value = (", " if spaces else ",").join(str(a) for a in addrs)
    assert parse_xff(value) == [str(a) for a in addrs]

