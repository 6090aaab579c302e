"""The validated, immutable policy: what the decision core reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..addresses import IPNetwork
from .budget_model import BudgetsConfig
from .conditions import Condition
from .indicator_model import IndicatorSettings
from .regions import RegionSpec
from .yamlpos import Where

ACTIONS = ("allow", "deny", "throttle")
DENY_KINDS = ("permission", "region")
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded")  # client_ip_headers choices
CREDENTIAL_MODES = ("refuse", "strip")  # extra_credentials choices


@dataclass(frozen=True, slots=True)
class Settings:
    """Global proxy behaviour (`settings:` section)."""

    trusted_proxies: tuple[IPNetwork, ...] = ()
    client_ip_headers: tuple[str, ...] = ("x-forwarded-for",)
    account_secret_env: str = "HYDRAGUARD_ACCOUNT_SECRET"
    extra_credentials: str = "refuse"  # conflicting / repeated credential headers
    non_model_paths: str = "pass"
    max_body_bytes: int = 16 * 1024 * 1024
    bad_body: str = "deny"
    upstream_connect_timeout: float = 10.0  # seconds
    upstream_read_timeout: float = 600.0  # seconds of upstream silence
    harmless_posts: tuple[str, ...] = ("default",)  # globs; "default": catalogue.HARMLESS_POSTS
    max_choices: int = 16
    max_batch_body_bytes: int = 256 * 1024 * 1024
    max_batch_requests: int = 100_000
    max_upload_bytes: int = 200 * 1024 * 1024
    batch_record_ttl: float = 30 * 86400.0
    public_base_url: str = ""

    def harmless_globs(self) -> tuple[str, ...]:
        """`harmless_posts` with `default` expanded to the shipped list."""
        from .catalogue import HARMLESS_POSTS

        out: list[str] = []
        for g in self.harmless_posts:
            out += HARMLESS_POSTS if g == "default" else (g,)
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Decision log (`log:` section)."""

    path: str = "-"
    max_bytes: int = 100 * 1024 * 1024
    backups: int = 5
    truncate_ip: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """One access rule: when `when` holds, take `action`."""

    id: str
    action: str
    when: Condition | None = None
    shadow: bool = False
    reason: str = ""
    deny_as: str = "permission"
    retry_after_s: float = 60.0
    description: str = ""
    region: RegionSpec | None = None
    exempt: Condition | None = None
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class GeoSettings:
    """GeoIP databases (`geoip:` section); paths already resolved."""

    paths: tuple[tuple[str, str], ...] = ()  # (role, path)
    optional: bool = False
    reload_interval: float = 2.0
    cache_size: int = 65536
    verify_seconds: float = 5.0
    max_age_days: float = 45


@dataclass(frozen=True, slots=True)
class Policy:
    """A whole, valid rules file set."""

    settings: Settings = Settings()
    log: LogSettings = LogSettings()
    rules: tuple[Rule, ...] = ()
    geoip: GeoSettings | None = None
    indicators: IndicatorSettings | None = None  # indicator_sections.compile_indicators()
    budgets: BudgetsConfig | None = None  # budget_sections.compile_budgets()
    sources: tuple[str, ...] = ()
    sections: dict[str, Any] = field(default_factory=dict, compare=False)
