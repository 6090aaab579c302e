"""Which budget cluster a request belongs to (sync, CPU only).

The first cluster definition whose ``when`` holds decides; its key is built from request
attributes (clusters/keys.py). With ``link:`` the account is first observed with its
evidence (IP, network prefix, JA4 + User-Agent, prompt template) in that definition's link
store, and the ``cluster`` attribute is the account's linked cluster id (``h-…``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING

from ..addresses import prefix as _prefix
from ..facts import ClusterRef, Facts
from .keys import cluster_key
from .links import Evidence, LinkStore

if TYPE_CHECKING:
    from ..policy.budget_model import ClusterDef

__all__ = ["ClusterResolver", "evidence_of", "rekey"]


def evidence_of(facts: Facts) -> Evidence:
    """The link evidence of a request, by kind."""
    ip = facts.client_ip
    sig = facts.signals
    ja4 = sig.get("tls.ja4")
    tpl = sig.get("template.id")
    return {
        "ip": str(ip) if ip is not None else None,
        "prefix": _prefix(ip),
        "tls_ua": f"{ja4}|{facts.user_agent}" if ja4 else None,
        "template": str(tpl) if tpl else None,
    }


def _attribute(name: str, facts: Facts) -> str | None:
    ip = facts.client_ip
    if name == "account":
        return facts.account
    if name == "ip":
        return str(ip) if ip is not None else None
    if name == "prefix":
        return _prefix(ip)
    if name == "asn":
        asn = facts.geo.asn if facts.geo is not None else None
        return str(asn) if asn is not None else None
    if name == "country":
        return facts.geo.country if facts.geo is not None else None
    if name == "ja4":
        return facts.signals.get("tls.ja4")
    if name == "api":
        return facts.api
    if name == "model":
        return facts.model
    return None


def rekey(ref: ClusterRef, template: tuple[str, ...], shared: str | None) -> ClusterRef | None:
    """``ref`` with the linked cluster id ``shared``; None when that changes nothing."""
    if shared is None or shared == ref.attr("cluster"):
        return None
    attrs = tuple((k, shared if k == "cluster" else v) for k, v in ref.attrs)
    if all(k != "cluster" for k, _ in attrs):
        attrs += (("cluster", shared),)
    return ClusterRef(ref.definition, cluster_key(template, dict(attrs)), attrs)


class ClusterResolver:
    """Cluster definitions plus their link stores."""

    def __init__(self, clusters: tuple[ClusterDef, ...], links: Mapping[str, LinkStore]) -> None:
        self.clusters = clusters
        self.links = links
        self._templates = {c.id: c.key for c in clusters}

    def resolve(self, facts: Facts) -> ClusterRef | None:
        """The request's cluster (records link evidence). None: no definition applies or
        the request is not a model call."""
        if facts.api is None:
            return None
        for c in self.clusters:
            if c.when is None or c.when.test(facts):
                break
        else:
            return None
        attrs = [(name, _attribute(name, facts)) for name in c.key]
        store = self.links.get(c.id)
        if store is not None:
            acct = facts.account
            attrs.append(("cluster", None if acct is None else
                          store.observe(acct, evidence_of(facts))))
        t = tuple(attrs)
        return ClusterRef(c.id, cluster_key(c.key, dict(t)), t)

    def confirm(self, facts: Facts, ref: ClusterRef) -> Awaitable[str | None] | None:
        """Start asking the shared link store for the account's cluster id (None: the
        store is not shared, or the request has no account)."""
        store = self.links.get(ref.definition)
        if store is None or facts.account is None:
            return None
        return store.confirm(facts.account, evidence_of(facts))

    def rekey(self, ref: ClusterRef, shared: str | None) -> ClusterRef | None:
        """``ref`` under the shared linked id (None when it is the same)."""
        return rekey(ref, self._templates[ref.definition], shared)
