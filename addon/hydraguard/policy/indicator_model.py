"""Compiled `indicators:` section: immutable plain data read by `hydraguard.indicators`.

A None sub-section is switched off. The schema and compile step are in `indicator_sections`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = [
    "BehaviourSettings",
    "HeaderSettings",
    "IndicatorSettings",
    "IpSettings",
    "ListSettings",
    "PatternSettings",
    "PromptSettings",
    "TemplateSettings",
    "TlsSettings",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ListSettings:
    name: str
    path: str  # absolute
    format: str
    reload_interval: float


@dataclass(frozen=True, slots=True)
class IpSettings:
    anonymous: bool = True
    hosting_asns: frozenset[int] = frozenset()
    proxy_asns: frozenset[int] = frozenset()
    lists: tuple[ListSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderSettings:
    trusted_proxies: tuple[IPNetwork, ...] = ()  # from settings.trusted_proxies
    ignore: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TlsSettings:
    window: float = 3600.0
    max_keys: int = 10_000
    max_accounts_per_key: int = 1000
    sdk_fingerprints: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class BehaviourSettings:
    window: float = 3600.0
    rate_window: float = 60.0
    max_keys: int = 1_000_000
    max_members_per_key: int = 200


@dataclass(frozen=True, slots=True)
class PatternSettings:
    name: str
    regex: str  # the regex (phrase patterns: the phrase)
    flags: str  # signals.prompts.PromptPatterns flags string


@dataclass(frozen=True, slots=True)
class TemplateSettings:
    text: str = "both"
    window: float = 3600.0
    min_chars: int = 0
    max_chars: int = 2048
    bands: int = 4  # no effect since the MinHash matcher (kept so older rules files load)
    max_distance: int = 3  # no effect, likewise
    threshold: float = 0.3
    min_words: int = 8
    max_templates: int = 10_000
    max_accounts_per_template: int = 1000


@dataclass(frozen=True, slots=True)
class PromptSettings:
    patterns: tuple[PatternSettings, ...] = ()
    templates: TemplateSettings | None = None


@dataclass(frozen=True, slots=True)
class IndicatorSettings:
    """Compiled `indicators:`; a None sub-section is switched off."""

    ip: IpSettings | None = None
    headers: HeaderSettings | None = None
    tls: TlsSettings | None = None
    behaviour: BehaviourSettings | None = None
    prompts: PromptSettings | None = None
