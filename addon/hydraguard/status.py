"""What the running proxy is doing, for operators: the status file and `hydraguard health`.

`/__hydraguard/healthz` on the proxy port answers any client, so it says only ``ok`` or
``degraded``. The detail (rules version, the last rejected rules change, GeoIP databases and
their build dates, the budget state backend, the sizes of the hydra-linking structures) goes
to a small JSON file that the proxy rewrites atomically (temporary file + rename, mode 0640
like the decision log) when something changes and every few seconds as a heartbeat.
`hydraguard health` reads it; a file older than STALE_AFTER_S means the proxy is not running
(or hangs).

Default place: ``<temp dir>/hydraguard-<port>.status.json`` (the port the proxy listens on);
`hydraguard run --status PATH` or the mitmproxy option ``hydraguard_status`` sets another,
``off`` writes none.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .decision_log import iso_time

if TYPE_CHECKING:
    from .pipeline import Gateway
    from .reload import RulesWatcher

HEARTBEAT_S = 2.0  # the file is rewritten at least this often
STALE_AFTER_S = 10.0  # older than this: the proxy is not running
DEFAULT_PORT = 8080


def default_status_path(port: int) -> str:
    """Where a proxy listening on `port` writes its status unless told otherwise."""
    return os.path.join(tempfile.gettempdir(), f"hydraguard-{port}.status.json")


def problems(gateway: Gateway, watcher: RulesWatcher | None) -> list[str]:
    """Why the proxy is degraded (empty: it is not). Cheap: called by every healthz."""
    out = []
    if watcher is not None and watcher.last_error is not None:
        out.append("a rules change on disk was rejected; the previous rules stay in force")
    state = gateway.backends.state
    if state is not None and not getattr(state, "healthy", True):
        out.append("the budget state backend is unavailable")
    return out


def geo_databases(gateway: Gateway) -> list[dict[str, Any]]:
    """The GeoIP databases in use: role, file, layout, build time, load error."""
    if gateway.geo is None:
        return []
    return [{k: d.get(k) for k in ("role", "path", "loaded", "layout", "build_time", "error")}
            for d in gateway.geo.describe()]


def snapshot(gateway: Gateway, watcher: RulesWatcher | None, **extra: Any) -> dict[str, Any]:
    """The status document (without its `updated` time). `extra`: listen, upstream, ..."""
    from .policy.load import FORMAT_VERSION

    policy = gateway.policy
    why = problems(gateway, watcher)
    b = policy.budgets
    state = gateway.backends.state
    return {
        "status": "degraded" if why else "ok",
        "problems": why,
        "pid": os.getpid(),
        **extra,
        "rules": {
            "paths": list(watcher.paths) if watcher is not None else [],
            "format": FORMAT_VERSION,
            "version": gateway.policy_digest,
            "rules": len(policy.rules),
            "files": list(policy.sources),
            "reloads": watcher.reloads if watcher is not None else 0,
        },
        "rejected_change": None if watcher is None or watcher.last_error is None else {
            "at": iso_time(watcher.rejected_at) if watcher.rejected_at else None,
            "errors": watcher.last_error,
        },
        "geoip": geo_databases(gateway),
        "state": {
            "backend": (b.state.backend if b is not None else "memory")
            if state is not None else None,
            "healthy": bool(getattr(state, "healthy", True)) if state is not None else None,
        },
        "linking": {cid: store.stats() for cid, store in gateway.backends.links.items()},
        "decision_log": gateway.log.path,
    }


def write_status(path: str, data: dict[str, Any]) -> None:
    """Replace the status file atomically (readers see the old or the new file, whole)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".hydraguard-status.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable(path: str) -> str | None:
    """None when a status file can be written at `path`, else why not (one line)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"folder {directory} does not exist"
    if os.path.isdir(path):
        return f"{path} is a folder"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"folder {directory} is not writable"
    return None


def _rules(r: dict[str, Any]) -> str:
    n = r["rules"]
    return (f"{', '.join(r['paths'])} (format {r['format']}, version {r['version']}, "
            f"{n} rule{'' if n == 1 else 's'}")


def _geo_line(d: dict[str, Any]) -> str:
    name = Path(str(d.get("path"))).name
    if not d.get("loaded"):
        return f"{d.get('role')} {name} (not loaded: {d.get('error') or 'unknown'})"
    built = str(d.get("build_time") or "?")[:10]
    return f"{d.get('role')} {name} ({d.get('layout')}, built {built})"


def startup_line(data: dict[str, Any]) -> str:
    """One line: what listens where, the upstream, the rules version, the GeoIP databases."""
    r = data["rules"]
    listen = ", ".join(data.get("listen") or ()) or "?"
    geo = "; geoip " + ", ".join(_geo_line(d) for d in data["geoip"]) if data["geoip"] \
        else "; no geoip"
    state = data["state"]["backend"]
    return (f"hydraguard: listening on {listen} -> {data.get('upstream') or '?'}; rules "
            f"{_rules(r)}){geo}; budget state {state or 'none'}; status file "
            f"{data.get('status_file') or 'off'}")


def render(data: dict[str, Any], age_s: float) -> tuple[list[str], int]:
    """`hydraguard health` output and exit status (0 ok, 1 degraded, 3 stale)."""
    if age_s > STALE_AFTER_S:
        return ([f"stale: the status file was last written at {data.get('updated')}, over "
                 f"{STALE_AFTER_S:g} s ago (pid {data.get('pid')}): the proxy is not running "
                 "or does not respond"], 3)
    r = data["rules"]
    lines = [f"status: {data['status']}"]
    lines += [f"  problem: {p}" for p in data.get("problems") or ()]
    lines += [
        f"listen: {', '.join(data.get('listen') or ())} -> {data.get('upstream')} "
        f"(pid {data.get('pid')}, since {data.get('started')})",
        f"rules: {_rules(r)}, {r['reloads']} reloads since start)",
    ]
    rej = data.get("rejected_change")
    if rej:
        lines.append(f"rejected rules change (since {rej.get('at')}):")
        lines += [f"  {x}" for x in str(rej.get("errors")).splitlines()]
    lines += [f"geoip: {_geo_line(d)}" for d in data.get("geoip") or ()] or ["geoip: none"]
    st = data.get("state") or {}
    if st.get("backend"):
        lines.append(f"budget state: {st['backend']} "
                     f"({'up' if st.get('healthy') else 'DOWN'})")
    else:
        lines.append("budget state: none (no budgets)")
    for cid, lk in (data.get("linking") or {}).items():
        own = lk.get("local", lk)
        lines.append(f"linking: cluster {cid} ({lk.get('backend')}): {own.get('nodes')} "
                     f"accounts, {own.get('clusters')} linked clusters, {own.get('pairs')} pair "
                     f"scores, {own.get('why')} why-records"
                     + (" (this replica's fallback)" if "local" in lk else ""))
    lines.append(f"decision log: {data.get('decision_log')}")
    return lines, 0 if data["status"] == "ok" else 1


def read_status(path: str) -> tuple[dict[str, Any], float]:
    """The status document and its age in seconds. OSError / ValueError when unreadable."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or "rules" not in data:
        raise ValueError("not a hydraguard status file")
    return data, max(0.0, time.time() - float(data.get("updated_epoch") or 0))
