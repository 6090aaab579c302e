"""Indicator library: pure, bounded-memory building blocks (no mitmproxy hooks, clock injected).

- `ja4`: JA4 TLS fingerprint, SDK runtime claim from headers
- `proxy_headers`: proxy header indicators, `Forwarded` / `X-Forwarded-For` parsers
- `iplists`: CIDR list files (plain, Tor, AWS, GCP), `CidrSet`, reloading `ListFile`
- `behaviour`: sliding-window distinct/rate counters and `BehaviourTracker`
- `prompts`: prompt patterns, SimHash and near-duplicate `TemplateTracker`
"""

from .behaviour import BehaviourConfig, BehaviourTracker, DistinctCounter, RateCounter
from .iplists import CidrSet, ListFile, parse_list
from .ja4 import ja4, ja4_from_raw, sdk_runtime_claim
from .prompts import PromptPatterns, TemplateTracker, simhash64
from .proxy_headers import parse_forwarded, parse_xff, proxy_header_signals

__all__ = [
    "BehaviourConfig",
    "BehaviourTracker",
    "CidrSet",
    "DistinctCounter",
    "ListFile",
    "PromptPatterns",
    "RateCounter",
    "TemplateTracker",
    "ja4",
    "ja4_from_raw",
    "parse_forwarded",
    "parse_list",
    "parse_xff",
    "proxy_header_signals",
    "sdk_runtime_claim",
    "simhash64",
]
