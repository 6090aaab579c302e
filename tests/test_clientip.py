"""True client address: forwarding headers only from trusted peers, walked right to left."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydraguard.clientip import ClientIpResolver
from hydraguard.pipeline import header_getter

ip = ipaddress.ip_address
R = ClientIpResolver([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")])


@pytest.mark.parametrize(("peer", "headers", "expected", "source"), [
    ("198.51.100.1", {"x-forwarded-for": "1.2.3.4"}, "198.51.100.1", "peer"),  # untrusted peer
    ("10.0.0.1", {}, "10.0.0.1", "peer"),
    ("10.0.0.1", {"x-forwarded-for": "1.2.3.4"}, "1.2.3.4", "x-forwarded-for"),
    # spoofed leftmost entry: the first untrusted hop from the right is the client
    ("10.0.0.1", {"x-forwarded-for": "6.6.6.6, 198.51.100.9, 10.1.1.1"}, "198.51.100.9",
     "x-forwarded-for"),
    ("10.0.0.1", {"x-forwarded-for": "10.2.2.2, 10.1.1.1"}, "10.2.2.2", "x-forwarded-for"),
    ("10.0.0.1", {"x-forwarded-for": "garbage, 10.1.1.1"}, "10.1.1.1", "x-forwarded-for"),
    ("10.0.0.1", {"forwarded": 'for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"'},
     "2001:db8::1", "forwarded"),
    ("10.0.0.1", {"forwarded": "for=unknown", "x-forwarded-for": "1.2.3.4"}, "10.0.0.1",
     "forwarded"),
    ("::1", {"x-forwarded-for": "192.0.2.5:1234"}, "192.0.2.5", "x-forwarded-for"),
    # a client's unbalanced quote does not hide the hop the trusted proxy appended
    ("10.0.0.1", {"forwarded": 'for="6.6.6.6, for=192.0.2.7'}, "192.0.2.7", "forwarded"),
])
def test_resolve(peer, headers, expected, source):
    assert R.resolve(ip(peer), header_getter(headers)) == (ip(expected), source)


def test_no_trusted_ranges_means_peer_only():
    r = ClientIpResolver([])
    got = r.resolve(ip("10.0.0.1"), header_getter({"x-forwarded-for": "1.2.3.4"}))
    assert got == (ip("10.0.0.1"), "peer")


@given(st.text(max_size=200))
def test_never_raises_on_any_header(value):
    got, _ = R.resolve(ip("10.0.0.1"), header_getter({"x-forwarded-for": value,
                                                      "forwarded": value}))
    assert got is not None
