"""The decision log line of one exchange: every field the README lists, no API key, no
prompt text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .apis import routes
from .decision_log import iso_time, truncate_ip

if TYPE_CHECKING:
    from .pipeline import Exchange

__all__ = ["decision_record"]


def decision_record(ex: Exchange, *, truncate: bool, now: float, policy_digest: str | None,
                    status: int | None, usage: Any, usage_source: str | None,
                    error: str | None, answered_by_proxy: bool) -> dict[str, Any]:
    """The decision log line for an exchange (no key, no prompt text)."""
    f, d = ex.facts, ex.decision
    trunc = truncate
    rec: dict[str, Any] = {
        "ts": iso_time(ex.started),
        "request_id": f.request_id,
        "client_ip": truncate_ip(f.client_ip) if trunc else (
            str(f.client_ip) if f.client_ip else None),
        "client_ip_source": f.client_ip_source,
        "peer_ip": truncate_ip(f.peer_ip) if trunc else (
            str(f.peer_ip) if f.peer_ip else None),
        "account": f.account,
        "method": f.method,
        "path": f.path,
        "api": f.api,
        "model": f.model,
        "stream": f.stream,
        "max_output": f.max_output,
        "input_tokens_est": f.input_tokens_est,
        "action": d.action,
        "rule": d.rule,
        "reason": d.reason,
        "shadow": d.shadow,
        "shadow_rules": list(d.shadow_rules),
        "enforced": d.enforced,
        "status": status,
        "upstream_status": None if answered_by_proxy else status,
        "input_tokens": usage.total_input if usage is not None else None,
        "output_tokens": usage.output_tokens if usage is not None else None,
        "usage_source": usage_source,
        "decision_us": ex.decision_us,
        "duration_ms": round((now - ex.started) * 1000, 3),
    }
    if f.route != routes.MODEL:  # what it is; upgrade: what replay needs to know
        rec.update(route=f.route, **({"upgrade": "websocket"} if f.route == "upgrade"
                                     else {}))
    if f.choices > 1:
        rec["choices"], rec["samples"] = f.choices, f.samples
    if f.deferred or f.unmetered:
        rec.update(deferred=f.deferred, unmetered=f.unmetered)
    if f.body_error:
        rec["body_error"] = f.body_error
    if f.geo is not None:
        rec["geo"] = f.geo.to_log()
    if f.signals:
        rec["signals"] = f.signals
    if f.cluster is not None:
        rec["cluster"] = f.cluster
        if f.cluster_ref is not None and f.cluster_ref.link:
            rec["link"] = dict(f.cluster_ref.link)
    if f.override is not None:
        rec["override"] = f.override
    if ex.admission is not None and ex.admission.refused:
        rec["stage"] = "budget"  # decided by the budget step, not by a rule (for replay)
    if policy_digest:
        rec["policy"] = policy_digest
    if error:
        rec["error"] = error
    rec.update(ex.extra)
    return rec
