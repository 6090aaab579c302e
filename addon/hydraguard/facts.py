"""Request facts: everything the decision core may look at, gathered once per request.

Only `gather.py` creates or changes a `Facts`; every other module reads it (signals and
cluster resolution return values that gather.py assigns).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .apis.batches import BatchSummary
    from .geo.info import GeoInfo

from .addresses import IPAddress


@dataclass(frozen=True, slots=True)
class ClusterRef:
    """Which budget cluster a request belongs to: the cluster definition's id, the key built
    from its attributes (see clusters/keys.py) and those attribute values, so the budget step
    can re-key it when the shared linking answers another cluster id. ``link`` (not part of
    its identity) says why a linked account is in its cluster: the decision log's ``link``."""

    definition: str
    key: str
    attrs: tuple[tuple[str, str | None], ...]
    link: Mapping[str, Any] | None = field(default=None, compare=False)
    # the link evidence and flag recorded for the request (resolve), reused to confirm it
    # with a shared link store; not part of its identity, never logged
    evidence: tuple[Mapping[str, str | None], bool] | None = field(
        default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """`<definition id>:<key>`: the logged `cluster` field and the budget state key."""
        return f"{self.definition}:{self.key}"

    def attr(self, name: str) -> str | None:
        """The value of one key attribute (None when absent)."""
        for k, v in self.attrs:
            if k == name:
                return v
        return None


@dataclass(slots=True)
class Facts:
    """What is known about one request. gather.py fills it; everything else only reads it."""

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
    credential_problem: str | None = None  # identity.Credential.problem (never the key)
    user_agent: str = ""
    geo: GeoInfo | None = None  # when GeoIP is configured
    signals: dict[str, Any] = field(default_factory=dict)
    cluster: str | None = None  # ClusterRef.name (also set from a log line by replay)
    cluster_ref: ClusterRef | None = None
    route: str = "model"  # what the request is: apis/routes.py (model, batch, upload, ...)
    ident: str | None = None  # the batch or file id its path names
    choices: int = 1  # outputs asked for, each up to max_output (chat n, completions best_of)
    samples: int = 1  # outputs asked for per prompt (what settings.max_choices limits)
    deferred: bool = False  # the response carries no usage (Responses background)
    batch: BatchSummary | None = None  # a batch submission's requests
    unmetered: str | None = None  # why the proxy cannot meter it (a batch over an unknown file)
    override: str | None = None  # an operator's "allow" / "deny" of the account (overrides.py)


def for_model(facts: Facts, model: str | None) -> Facts:
    """A copy of ``facts`` that differs only in ``model``: the rules and budget conditions of a
    batch are evaluated once per model it names. A throwaway view; nothing stores it."""
    return dataclasses.replace(facts, model=model, signals=facts.signals)
