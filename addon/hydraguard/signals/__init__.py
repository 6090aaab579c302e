"""Indicator library: pure, bounded-memory building blocks (no mitmproxy hooks, clock injected).

- `ja4`: JA4 TLS fingerprint, SDK runtime claim from headers
- `proxy_headers`: proxy header indicators (header name sets)
- `iplists`: the reloading CIDR list file `ListFile`

Address parsing, `CidrSet`, list-file and `Forwarded` / `X-Forwarded-For` parsing live in
`hydraguard.addresses`.
- `behaviour`: sliding-window distinct/rate counters and `BehaviourTracker`
- `prompts`: prompt patterns, SimHash and near-duplicate `TemplateTracker`
"""

from .behaviour import BehaviourConfig, BehaviourTracker, DistinctCounter, RateCounter
from .iplists import ListFile
from .ja4 import ja4, ja4_from_raw, sdk_runtime_claim
from .prompts import PromptPatterns, TemplateTracker, simhash64
from .proxy_headers import proxy_header_signals

__all__ = [
    "BehaviourConfig",
    "BehaviourTracker",
    "DistinctCounter",
    "ListFile",
    "PromptPatterns",
    "RateCounter",
    "TemplateTracker",
    "ja4",
    "ja4_from_raw",
    "proxy_header_signals",
    "sdk_runtime_claim",
    "simhash64",
]
