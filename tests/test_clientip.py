"""True client address: forwarding headers only from trusted peers, walked right to left."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydraguard.clientip import ClientIpResolver
from hydraguard.pipeline import header_getter

ip = ipaddress.ip_address
TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]
# both headers, Forwarded first: the walk of each header is tested here
R = ClientIpResolver(TRUSTED, ("forwarded", "x-forwarded-for"))
DEFAULT = ClientIpResolver(TRUSTED)  # settings.client_ip_headers default: x-forwarded-for


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


def test_default_reads_x_forwarded_for_only():
    """A client's own Forwarded header (passed through by a balancer that appends to
    X-Forwarded-For) does not choose the address; it is reported as a conflict."""
    headers = header_getter({"forwarded": "for=192.0.2.1", "x-forwarded-for": "192.0.2.81"})
    got = DEFAULT.examine(ip("10.0.0.1"), headers)
    assert got == (ip("192.0.2.81"), "x-forwarded-for", True)
    assert DEFAULT.resolve(ip("10.0.0.1"), headers) == (ip("192.0.2.81"), "x-forwarded-for")
    # Forwarded alone is not read at all
    alone = header_getter({"forwarded": "for=192.0.2.1"})
    assert DEFAULT.examine(ip("10.0.0.1"), alone) == (ip("10.0.0.1"), "peer", False)


@pytest.mark.parametrize(("headers", "expected"), [
    # the same client in both (a balancer that writes both): no conflict
    ({"forwarded": "for=192.0.2.9", "x-forwarded-for": "192.0.2.9"}, ("192.0.2.9", False)),
    ({"forwarded": 'for="192.0.2.9:80", for=10.1.1.1', "x-forwarded-for": "192.0.2.9"},
     ("192.0.2.9", False)),
    # the client's chain beyond the trusted hops differs
    ({"forwarded": "for=198.51.100.7", "x-forwarded-for": "6.6.6.6, 192.0.2.9"},
     ("192.0.2.9", True)),
    # an unusable Forwarded (unknown / obfuscated / garbage) names no other client
    ({"forwarded": "for=unknown", "x-forwarded-for": "192.0.2.9"}, ("192.0.2.9", False)),
    ({"forwarded": "for=_hidden", "x-forwarded-for": "192.0.2.9"}, ("192.0.2.9", False)),
    # an X-Forwarded-For that ends in garbage falls back to the peer, Forwarded disagrees
    ({"forwarded": "for=192.0.2.9", "x-forwarded-for": "nonsense"}, ("10.0.0.1", True)),
])
def test_conflict_between_forwarding_headers(headers, expected):
    got = DEFAULT.examine(ip("10.0.0.1"), header_getter(headers))
    assert (str(got.ip), got.conflict) == expected
    assert got.source == "x-forwarded-for"


def test_second_configured_header_is_read_only_when_the_first_is_absent():
    r = ClientIpResolver(TRUSTED, ("x-forwarded-for", "forwarded"))
    both = header_getter({"forwarded": "for=192.0.2.1", "x-forwarded-for": "192.0.2.81"})
    assert r.examine(ip("10.0.0.1"), both) == (ip("192.0.2.81"), "x-forwarded-for", True)
    only = header_getter({"forwarded": "for=192.0.2.1"})
    assert r.examine(ip("10.0.0.1"), only) == (ip("192.0.2.1"), "forwarded", False)


def test_untrusted_peer_never_conflicts():
    headers = header_getter({"forwarded": "for=192.0.2.1", "x-forwarded-for": "192.0.2.81"})
    assert DEFAULT.examine(ip("198.51.100.1"), headers) == (ip("198.51.100.1"), "peer", False)
