"""List-file parsing (plain, Tor, AWS, GCP) of hydraguard.addresses.parse_list."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from hydraguard.addresses import parse_list


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
