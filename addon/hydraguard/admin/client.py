"""`hydraguard clusters`: a running proxy's linked clusters as a table, read from its admin
listener (stdlib HTTP client; the bearer token from $HYDRAGUARD_ADMIN_TOKEN when set)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .listener import DEFAULT_TOKEN_ENV

__all__ = ["AdminClientError", "get_json", "render_clusters", "show_clusters"]


class AdminClientError(Exception):
    """The admin listener could not be asked (one line: why)."""


def get_json(base: str, path: str, token: str | None = None, timeout: float = 30.0) -> Any:
    """GET `path` of the admin listener at `base`; its JSON document."""
    token = token if token is not None else os.environ.get(DEFAULT_TOKEN_ENV) or None
    req = urllib.request.Request(base.rstrip("/") + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        with e:
            try:
                why = json.load(e).get("error")
            except ValueError:
                why = None
        raise AdminClientError(f"{base}{path}: {e.code} {why or e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise AdminClientError(f"cannot reach the admin listener at {base} ({reason}): is "
                               "the proxy running with --admin?") from None


def _budgets(c: dict[str, Any]) -> str:
    parts = []
    for b in c.get("budgets") or ():
        if not b.get("windows"):
            parts.append(f"{b.get('id', '?')} {b.get('note', '')}".strip())
            continue
        ws = " ".join(f"{w['name']} {w['used']}/{w['limit']}" for w in b["windows"])
        parts.append(f"{b['id']}: {ws}")
    return "; ".join(parts) or "-"


def render_clusters(doc: dict[str, Any]) -> str:
    """The /clusters document as a table, the heaviest cluster first."""
    rows = [("CLUSTER", "DEFINITION", "MEMBERS", "TOKENS", "EVIDENCE", "BUDGETS (used/limit)")]
    for c in doc.get("clusters") or ():
        ev = ", ".join(f"{k} {n}" for k, n in sorted((c.get("evidence") or {}).items())) or "-"
        rows.append((c["id"], c["definition"], str(c["members"]), str(c["tokens"]), ev,
                     _budgets(c)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(v.ljust(w) for v, w in zip(r[:-1], widths, strict=True)), r[-1]])
             for r in rows]
    shown, total = len(rows) - 1, doc.get("linked_clusters", len(rows) - 1)
    lines.append(f"{shown} of {total} linked cluster{'' if total == 1 else 's'}")
    return "\n".join(lines)


def show_clusters(base: str, top: int, *, as_json: bool = False) -> str:
    """What `hydraguard clusters` prints."""
    doc = get_json(base, "/clusters?" + urllib.parse.urlencode({"top": top}))
    return json.dumps(doc, indent=2) if as_json else render_clusters(doc)
