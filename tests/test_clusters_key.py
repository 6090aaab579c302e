"""cluster_key: template order, missing attributes, Redis-safe escaping, hashing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydraguard.clusters import CLUSTER_KEY_ATTRS, cluster_key


def test_basic_template_order_and_missing():
    attrs = {"account": "acct_123", "model": "claude-sonnet-4", "ip": None, "country": ""}
    assert cluster_key(("account", "model"), attrs) == "account=acct_123|model=claude-sonnet-4"
    assert cluster_key(("model", "account"), attrs) == "model=claude-sonnet-4|account=acct_123"
    assert cluster_key(("ip", "country", "asn"), attrs) == "ip=-|country=-|asn=-"


def test_literal_dash_differs_from_missing():
    assert cluster_key(("asn",), {"asn": "-"}) != cluster_key(("asn",), {})


def test_ipv6_and_prefix_values_kept_readable():
    k = cluster_key(("ip", "prefix"), {"ip": "2001:db8::1", "prefix": "2001:db8::/48"})
    assert k == "ip=2001:db8::1|prefix=2001:db8::/48"


def test_unsafe_characters_are_escaped():
    k = cluster_key(("account", "ja4"), {"account": "a b{c}|d=e", "ja4": "t13d1516h2_8daaf6152771"})
    assert k == "account=a%20b%7Bc%7D%7Cd%3De|ja4=t13d1516h2_8daaf6152771"


def test_long_values_are_hashed():
    k1 = cluster_key(("account",), {"account": "x" * 65})
    k2 = cluster_key(("account",), {"account": "x" * 66})
    assert re.fullmatch(r"account=#[0-9a-f]{24}", k1)
    assert k1 != k2
    assert cluster_key(("account",), {"account": "x" * 64}) == "account=" + "x" * 64


def test_unknown_attribute_and_empty_template_rejected():
    with pytest.raises(ValueError, match="unknown cluster key attribute"):
        cluster_key(("account", "email"), {})
    with pytest.raises(ValueError):
        cluster_key((), {})


def test_all_known_attributes_accepted():
    names = tuple(sorted(CLUSTER_KEY_ATTRS))
    k = cluster_key(names, dict.fromkeys(names, "v"))
    assert k.count("=v") == len(names)


@given(
    st.dictionaries(
        st.sampled_from(sorted(CLUSTER_KEY_ATTRS)), st.one_of(st.none(), st.text(max_size=200))
    )
)
def test_keys_are_redis_safe_and_injective_per_value(attrs):
    template = tuple(sorted(CLUSTER_KEY_ATTRS))
    k = cluster_key(template, attrs)
    assert not re.search(r"[\s{}]", k)
    assert len(k) <= len(template) * (len("country=") + 64 + 1)
    parts = k.split("|")
    assert len(parts) == len(template)
    assert all(p.count("=") == 1 for p in parts)
