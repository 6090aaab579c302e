"""Request facts: everything the decision core may look at, gathered once per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .addresses import IPAddress


@dataclass(slots=True)
class Facts:
    """What is known about one request. Adapters fill it; the core only reads it."""

    request_id: str
    method: str
    path: str
    peer_ip: IPAddress | None
    client_ip: IPAddress | None
    client_ip_source: str = "peer"  # "peer", "forwarded" or "x-forwarded-for"
    account: str | None = None  # keyed hash of the API key, never the key
    api: str | None = None  # "anthropic.messages", "openai.chat", "openai.responses", None
    provider: str = "anthropic"
    model: str | None = None
    stream: bool = False
    max_output: int | None = None
    input_tokens_est: int = 0
    body_error: str | None = None
    user_agent: str = ""
    geo: Any = None  # hydraguard.geo.GeoInfo when GeoIP is configured
    signals: dict[str, Any] = field(default_factory=dict)
    cluster: str | None = None
    cluster_parts: Any = None  # (definition, key attributes): lets the budget step re-key

    @property
    def is_model_call(self) -> bool:
        return self.api is not None
