"""Proxy header indicators and the Forwarded / X-Forwarded-For parsers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.http import Headers

from hydraguard.signals.proxy_headers import (
    format_forwarded,
    node_address,
    parse_forwarded,
    parse_xff,
    proxy_header_signals,
    split_node,
)


def test_untrusted_peer_reports_all_proxy_headers() -> None:
    h = {
        "Host": "api.example.com",
        "X-Forwarded-For": "198.51.100.7",
        "Via": "1.1 squid",
        "Forwarded": "for=198.51.100.7",
        "X-Real-IP": "198.51.100.7",
        "Proxy-Connection": "keep-alive",
        "Content-Type": "application/json",
    }
    assert proxy_header_signals(h, peer_trusted=False) == {
        "x-forwarded-for",
        "via",
        "forwarded",
        "x-real-ip",
        "proxy-connection",
    }


def test_trusted_peer_reports_only_non_forwarding_headers() -> None:
    h = [
        ("X-Forwarded-For", "198.51.100.7"),
        ("via", "1.1 lb"),
        ("X-Proxy-ID", "abc"),
        ("Client-IP", "1.2.3.4"),
        ("X-Cluster-Client-IP", "1.2.3.4"),
        ("Proxy-Agent", "x"),
    ]
    assert proxy_header_signals(h, peer_trusted=True) == {"via", "x-proxy-id", "proxy-agent"}
    assert proxy_header_signals(h, peer_trusted=False) == {
        "x-forwarded-for",
        "via",
        "x-proxy-id",
        "client-ip",
        "x-cluster-client-ip",
        "proxy-agent",
    }


def test_mitmproxy_headers_and_bytes_and_garbage() -> None:
    h = Headers(host="x", x_forwarded_host="evil.example", x_forwarded_for="1.2.3.4")
    assert proxy_header_signals(h, False) == {"x-forwarded-host", "x-forwarded-for"}
    assert proxy_header_signals([(b"Via", b"1.0 p")], False) == {"via"}
    assert proxy_header_signals({}, False) == frozenset()
    assert proxy_header_signals(None, False) == frozenset()  # type: ignore[arg-type]
    assert proxy_header_signals([("only-one",)], False) == frozenset()  # type: ignore[list-item]


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
    assert isinstance(proxy_header_signals({text: text}, False), frozenset)


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
