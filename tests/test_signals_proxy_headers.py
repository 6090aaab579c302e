"""Proxy header indicators (the Forwarded / X-Forwarded-For parsers: test_addresses.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.http import Headers

from hydraguard.signals.proxy_headers import proxy_header_signals


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


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_never_raises(text: str) -> None:
    assert isinstance(proxy_header_signals({text: text}, False), frozenset)
