"""CIDR list parsing, CidrSet membership and ListFile reloading."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hydraguard.signals.iplists import CidrSet, ListFile, ip_to_int, parse_list


def test_plain() -> None:
    text = (
        "# comment\n\n192.0.2.0/24\n198.51.100.7  # one host\n2001:db8::/32\nnot-an-ip\n"
        "10.0.0.1/8\n"
    )
    nets, errors = parse_list(text, "plain")
    assert [str(n) for n in nets] == [
        "192.0.2.0/24",
        "198.51.100.7/32",
        "2001:db8::/32",
        "10.0.0.0/8",
    ]
    assert errors == ["line 6: not an IP or CIDR: 'not-an-ip'"]


def test_tor() -> None:
    bulk = "# exit list\n185.220.101.1\n2001:db8::5\n192.0.2.0/24\n"
    nets, errors = parse_list(bulk, "tor")
    assert [str(n) for n in nets] == ["185.220.101.1/32", "2001:db8::5/128"]
    assert len(errors) == 1 and "line 4" in errors[0]
    exit_addresses = (
        "ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\n"
        "Published 2024-01-01 00:00:00\nLastStatus 2024-01-01 01:00:00\n"
        "ExitAddress 162.247.74.201 2024-01-01 01:10:00\n"
    )
    nets, errors = parse_list(exit_addresses, "tor")
    assert [str(n) for n in nets] == ["162.247.74.201/32"] and errors == []


def test_aws() -> None:
    doc = {
        "syncToken": "1",
        "prefixes": [
            {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON"},
            {"ip_prefix": "bogus", "service": "EC2"},
        ],
        "ipv6_prefixes": [{"ipv6_prefix": "2600:1f14::/35", "service": "EC2"}],
    }
    nets, errors = parse_list(json.dumps(doc), "aws")
    assert [str(n) for n in nets] == ["3.5.140.0/22", "2600:1f14::/35"]
    assert errors == ["prefixes[1]: no valid ip_prefix: 'bogus'"]


def test_gcp() -> None:
    doc = {
        "syncToken": "1",
        "prefixes": [
            {"ipv4Prefix": "34.1.208.0/20", "service": "Google Cloud", "scope": "africa-south1"},
            {"ipv6Prefix": "2600:1900:8000::/44", "service": "Google Cloud"},
        ],
    }
    nets, errors = parse_list(json.dumps(doc), "gcp")
    assert [str(n) for n in nets] == ["34.1.208.0/20", "2600:1900:8000::/44"] and errors == []


def test_bad_documents() -> None:
    assert parse_list("{not json", "aws")[0] == []
    assert parse_list("{not json", "aws")[1][0].startswith("invalid JSON")
    assert parse_list("[]", "gcp") == ([], ["invalid document: top level is not an object"])
    assert parse_list("{}", "aws")[1] == ["invalid document: no prefixes or ipv6_prefixes list"]
    assert parse_list('{"prefixes": 3}', "gcp")[1][0] == "prefixes: not a list"
    assert parse_list("[" * 100000, "aws")[0] == []
    assert parse_list("1.2.3.4", "nope")[1][0].startswith("unknown list format")
    many = "\n".join(["x"] * 500)
    assert len(parse_list(many, "plain")[1]) == 101


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.sampled_from(["plain", "tor", "aws", "gcp", "??"]))
def test_parsers_never_raise(text: str, fmt: str) -> None:
    nets, errors = parse_list(text, fmt)
    assert isinstance(nets, list) and isinstance(errors, list)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: (
            st.lists(c, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["prefixes", "ipv6_prefixes", "ip_prefix", "ipv4Prefix", "ipv6Prefix", "x"]
                ),
                c,
                max_size=4,
            )
        ),
        max_leaves=20,
    ),
    st.sampled_from(["aws", "gcp"]),
)
def test_json_parsers_never_raise_on_odd_structures(doc: object, fmt: str) -> None:
    nets, errors = parse_list(json.dumps(doc), fmt)
    assert isinstance(nets, list) and isinstance(errors, list)


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


def test_listfile_reload_and_keep_old(tmp_path: Path, caplog) -> None:
    now = [0.0]
    p = tmp_path / "list.txt"
    p.write_text("192.0.2.0/24\n")
    lf = ListFile(p, "plain", check_interval=10, clock=lambda: now[0])
    assert lf.loaded and lf.contains("192.0.2.5") and not lf.contains("198.51.100.1")

    p.write_text("198.51.100.0/24\n")
    os.utime(p, ns=(1, 10**18))  # make sure mtime changes even on coarse clocks
    assert not lf.check()  # not due yet
    assert lf.get().contains("192.0.2.5")
    now[0] = 11
    assert lf.get().contains("198.51.100.1") and not lf.contains("192.0.2.5")

    # an invalid version keeps the old set and logs exactly one error
    p.write_text("198.51.100.0/24\ngarbage\n")
    os.utime(p, ns=(1, 2 * 10**18))
    with caplog.at_level(logging.ERROR, logger="hydraguard.signals.iplists"):
        for i in range(5):
            now[0] = 30 + 20 * i
            assert not lf.check()
    assert lf.contains("198.51.100.1") and lf.last_error and "garbage" in lf.last_error
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    # empty replacement of a non-empty list is rejected; a missing file keeps the list too
    p.write_text("# nothing\n")
    os.utime(p, ns=(1, 3 * 10**18))
    assert not lf.check(force=True) and lf.contains("198.51.100.1")
    p.unlink()
    assert not lf.check(force=True) and lf.contains("198.51.100.1")
    # a fixed file is picked up again
    p.write_text("203.0.113.0/24\n")
    assert lf.check(force=True) and lf.contains("203.0.113.9") and lf.last_error is None


def test_listfile_missing_at_start(tmp_path: Path) -> None:
    lf = ListFile(tmp_path / "nope.json", "aws", clock=lambda: 0.0)
    assert not lf.loaded and not lf.contains("1.2.3.4") and lf.last_error
