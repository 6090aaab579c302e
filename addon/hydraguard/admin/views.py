"""The admin listener's JSON documents: clusters ranked by the tokens they were charged, one
cluster, one account. Read from the gateway in force: its link stores' read-only views
(clusters/view.py), its budget state (`BudgetState.peek`) and the overrides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..clusters.keys import cluster_id, cluster_key
from ..decision_log import iso_time

if TYPE_CHECKING:
    from ..clusters.view import WhyRecord
    from ..pipeline import Gateway

__all__ = ["account_doc", "cluster_doc", "find_cluster", "top_doc"]

MAX_RANKED = 1000  # linked clusters (largest first) whose budgets are read to rank them


def _t(ts: float | None) -> str | None:
    return iso_time(ts) if ts is not None and ts == ts else None


def _views(gw: Gateway) -> list[tuple[str, Any, bool]]:
    """(definition, view, shared) of every link store that offers a view."""
    out = []
    for definition, store in gw.backends.links.items():
        view = getattr(store, "view", None)
        if view is not None:
            out.append((definition, view(), hasattr(store, "state")))
    return out


def why_json(w: WhyRecord) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": w.kind, "value": w.value, "accounts": w.accounts,
                         "linking": w.linking, "last_seen": _t(w.last_seen)}
    if w.first_seen is not None:
        d["first_seen"] = _t(w.first_seen)
    return d


async def budgets_of(gw: Gateway, definition: str, cid: str) -> tuple[list[dict], int]:
    """The cluster budgets of a linked cluster with their level per window, and the tokens
    used in the longest window of each, summed (the ranking of /clusters)."""
    b, state = gw.policy.budgets, gw.backends.state
    if b is None or state is None:
        return [], 0
    cdef = next((c for c in b.clusters if c.id == definition), None)
    if cdef is None:
        return [], 0
    if tuple(cdef.key) != ("cluster",):
        return [{"note": f"the budget keys of cluster definition {definition!r} use other "
                 "attributes than the cluster too: levels are per key"}], 0
    name = f"{definition}:{cluster_key(cdef.key, {'cluster': cid})}"
    out, total = [], 0
    for bd in b.budgets:
        if bd.probation is not None or (bd.clusters is not None and
                                         definition not in bd.clusters):
            continue
        states = await state.peek(f"{bd.id}:{name}", bd.windows, group=name)
        if not states:
            out.append({"id": bd.id, "windows": None, "note": "budget state unavailable"})
            continue
        periods = {w.name: w.period_s for w in bd.windows}
        windows = [{"name": s.name, "limit": s.limit, "used": max(0, round(s.limit - s.remaining)),
                    "remaining": round(s.remaining), "reset_s": round(s.reset_s, 3)}
                   for s in states]
        longest = max(windows, key=lambda w: periods.get(w["name"], 0.0))
        total += longest["used"]
        entry: dict[str, Any] = {"id": bd.id, "windows": windows}
        if bd.when is not None:
            entry["conditional"] = True  # applies to some requests of the cluster only
        if bd.shadow:
            entry["shadow"] = True
        out.append(entry)
    return out, total


def _live(gw: Gateway, members: list[str]) -> list[str]:
    """Members minus the accounts an operator detached."""
    ov = gw.overrides
    return [m for m in members if not ov.detached(m)]


async def top_doc(gw: Gateway, n: int) -> dict[str, Any]:
    """`GET /clusters?top=N`."""
    ranked = []
    total = 0
    for definition, view, shared in _views(gw):
        for c in await view.top(MAX_RANKED):
            members = _live(gw, c.members)
            if len(members) < 2:
                continue
            total += 1
            budgets, tokens = await budgets_of(gw, definition, c.id)
            ranked.append({"id": c.id, "definition": definition, "members": len(members),
                           "evidence": c.evidence, "tokens": tokens, "budgets": budgets,
                           "shared": shared})
    ranked.sort(key=lambda d: (-d["tokens"], -d["members"], d["id"]))
    return {"clusters": ranked[:n], "linked_clusters": total}


async def find_cluster(gw: Gateway, cid: str) -> tuple[str, Any, list[str]] | None:
    """(definition, view, members) of a linked cluster of two or more accounts that an
    operator did not detach."""
    for definition, view, _shared in _views(gw):
        members = await view.members(cid)
        if members is not None:
            live = _live(gw, members)  # split or unlinked down to one: no cluster left
            return (definition, view, live) if len(live) > 1 else None
    return None


async def cluster_doc(gw: Gateway, cid: str) -> dict[str, Any] | None:
    """`GET /clusters/{id}`; None: no such linked cluster."""
    found = await find_cluster(gw, cid)
    if found is None:
        return None
    definition, view, members = found
    evidence = await view.evidence(cid) or []
    budgets, tokens = await budgets_of(gw, definition, cid)
    return {"id": cid, "definition": definition, "members": members,
            "evidence": [why_json(w) for w in evidence], "budgets": budgets,
            "tokens": tokens}


def overrides_of(gw: Gateway, account: str) -> dict[str, Any]:
    out = {}
    for kind in ("allow", "deny", "detach"):
        o = gw.overrides.get(kind, account)
        if o is not None:
            out[kind] = {"until": _t(o.until), "by": o.by, "at": _t(o.at), "note": o.note}
    return out


async def account_doc(gw: Gateway, account: str) -> dict[str, Any]:
    """`GET /accounts/{hash}`: its overrides, and per linked cluster definition its cluster
    and why: the pair that linked it (``link``, as in the decision log) and the evidence
    values it was seen with."""
    links = []
    detached = gw.overrides.detached(account)
    for definition, view, shared in _views(gw):
        w = await view.why(account)
        entry: dict[str, Any] = {
            "definition": definition, "shared": shared,
            "cluster": cluster_id(account) if detached else w.cluster,
            "size": 1 if detached else w.size, "first_seen": _t(w.first_seen),
            "link": None if detached else w.link,
            "evidence": [why_json(x) for x in w.evidence], "truncated": w.truncated}
        if detached:
            entry["detached_from"] = w.cluster if w.cluster != cluster_id(account) else None
        links.append(entry)
    return {"account": account, "overrides": overrides_of(gw, account), "links": links}
