"""Which budget cluster a request belongs to (sync, CPU only).

The first cluster definition whose ``when`` holds decides; its key is built from request
attributes (clusters/keys.py). With ``link:`` the account is first observed with its
evidence (exit IP, network prefix, ASN, JA4 + User-Agent, prompt template, flagged network
or not) in that definition's link store, and the ``cluster`` attribute is the account's
linked cluster id (``h-…``); a linked account's ClusterRef carries the ``link`` object of the
decision log (cluster size and the pair that linked it).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ..addresses import prefix as _prefix
from ..facts import ClusterRef, Facts
from ..policy.budget_model import FLAGGED_SIGNALS
from .keys import cluster_key
from .links import Evidence, LinkStore

if TYPE_CHECKING:
    from ..policy.budget_model import ClusterDef, LinkConfig

__all__ = ["ClusterResolver", "Confirmed", "evidence_of", "flagged_of", "rekey"]


def _exit_prefixes(link: LinkConfig | None) -> tuple[int | None, int]:
    """(IPv6 exit prefix length, IPv6 /prefix length): None keeps the address itself."""
    bits = link.ipv6_exit_prefix if link is not None else 64
    return (None if bits >= 128 else bits), (48 if bits > 48 else 32)


def evidence_of(facts: Facts, link: LinkConfig | None = None) -> Evidence:
    """The link evidence of a request, by kind: its exit (the client IP; an IPv6 address as
    its ``ipv6_exit_prefix`` network, so rotation inside it is one exit), its prefix (/24;
    IPv6 /48), its ASN, TLS fingerprint + User-Agent and prompt template id."""
    ip = facts.client_ip
    sig = facts.signals
    ja4 = sig.get("tls.ja4")
    tpl = sig.get("template.id")
    geo = facts.geo
    asn = geo.asn if geo is not None else None
    if ip is None:
        exit_, net = None, None
    elif ip.version == 4:
        exit_, net = str(ip), _prefix(ip)
    else:
        bits6, net6 = _exit_prefixes(link)
        exit_ = str(ip) if bits6 is None else _prefix(ip, bits6)
        net = _prefix(ip, net6)
    return {
        "ip": exit_,
        "prefix": net,
        "asn": str(asn) if asn is not None else None,
        "tls_ua": f"{ja4}|{facts.user_agent}" if ja4 else None,
        "template": str(tpl) if tpl else None,
    }


def flagged_of(facts: Facts, link: LinkConfig | None = None) -> bool:
    """Whether the request came through a flagged network: one of the link's
    ``flagged_signals`` is set (a name ending in ``*`` is a prefix)."""
    names = link.flagged_signals if link is not None else FLAGGED_SIGNALS
    sig = facts.signals
    if not sig:
        return False
    for name in names:
        if name.endswith("*"):
            head = name[:-1]
            if any(v and k.startswith(head) for k, v in sig.items()):
                return True
        elif sig.get(name):
            return True
    return False


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


class Confirmed(NamedTuple):
    """The shared store's answer: the agreed cluster id and the account's ``link`` object."""

    cluster_id: str
    link: Mapping[str, Any] | None


def rekey(ref: ClusterRef, template: tuple[str, ...], shared: str | Confirmed | None
          ) -> ClusterRef | None:
    """``ref`` with the linked cluster id ``shared``; None when that changes nothing. The same
    id with the shared store's `link` answer gives ``ref`` with that link and the same key
    (the reservation stays where it is)."""
    if shared is None:
        return None
    link = None
    if isinstance(shared, Confirmed):
        shared, link = shared
    if shared == ref.attr("cluster"):
        return None if link is None or link == ref.link else dataclasses.replace(ref, link=link)
    attrs = tuple((k, shared if k == "cluster" else v) for k, v in ref.attrs)
    if all(k != "cluster" for k, _ in attrs):
        attrs += (("cluster", shared),)
    return ClusterRef(ref.definition, cluster_key(template, dict(attrs)), attrs, link)


async def _confirmed(store: LinkStore, pending: Awaitable[str | None], account: str
                     ) -> Confirmed | None:
    cid = await pending
    return None if cid is None else Confirmed(cid, store.link_info(account))


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
        store = self.links.get(c.id)
        # with linking, the `cluster` attribute is the linked id, added once below
        attrs = [(name, _attribute(name, facts)) for name in c.key
                 if store is None or name != "cluster"]
        link = evidence = None
        if store is not None:
            acct = facts.account
            cid = None
            if acct is not None:
                evidence = (evidence_of(facts, c.link), flagged_of(facts, c.link))
                cid = store.observe(acct, evidence[0], flagged=evidence[1])
                link = store.link_info(acct)
            attrs.append(("cluster", cid))
        t = tuple(attrs)
        return ClusterRef(c.id, cluster_key(c.key, dict(t)), t, link, evidence)

    def confirm(self, facts: Facts, ref: ClusterRef) -> Awaitable[Confirmed | None] | None:
        """Start asking the shared link store for the account's cluster id (None: the
        store is not shared, or the request has no account)."""
        store = self.links.get(ref.definition)
        if store is None or facts.account is None or ref.evidence is None:
            return None
        evidence, flagged = ref.evidence  # recorded by `resolve`
        pending = store.confirm(facts.account, evidence, flagged=flagged)
        if pending is None:
            return None
        return asyncio.ensure_future(_confirmed(store, pending, facts.account))

    def rekey(self, ref: ClusterRef, shared: str | Confirmed | None) -> ClusterRef | None:
        """``ref`` under the shared linked id (None when it is the same)."""
        return rekey(ref, self._templates[ref.definition], shared)
