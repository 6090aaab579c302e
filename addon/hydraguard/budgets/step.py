"""The pure budget step: which budgets apply to a request, how much each reserves, and what
the state's answers mean (admit, cap the output, or refuse with which reason and rate-limit
headers). No I/O, no clock reads: `now` is an argument. budgets/driver.py asks the state
backend and feeds the answers in.

A request's budget step runs in up to two rounds:
1. `plan`: one `Ask` per budget that applies, reserving
   ``ceil((w_in * input estimate + w_out * choices * min(max_output, max_output_reserve))
   * multiplier)`` (``choices``: every output the request asks for, e.g. chat ``n``; a
   Responses ``background`` request, whose response carries no usage to settle with, reserves
   its whole ``max_output`` unclamped); a batch submission is one `Ask` per budget for the
   whole batch (budgets/batch_math.py);
2. `cap_retry`: for a refused budget with ``on_exceed: cap_max_tokens``, the smaller ask
   with the output capped;
then `outcome` reads the answers in budget order: the first enforcing budget that refused
decides a refusal (everything reserved is released: a refused shadow request is not
charged either, so the shadow bucket follows what enforcement would have let through);
shadow budgets that refused are only logged (``budget_shadow``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..addresses import prefix
from ..apis.errors import RateLimitInfo, ratelimit_headers
from ..clusters.keys import cluster_key
from ..facts import ClusterRef, Facts
from . import batch_math
from .amounts import charge_amount, floor_tokens, reserve_amount
from .spec import Reservation, ReserveResult, WindowState

if TYPE_CHECKING:
    from ..apis.usage import Usage
    from ..policy.budget_model import BudgetDef, ProbationSpec

__all__ = ["Ask", "Hold", "Outcome", "cap_retry", "charge", "charge_amount", "outcome", "plan",
           "reserve_amount"]


def output_allowance(b: BudgetDef, max_output: int | None, deferred: bool = False) -> int:
    """The output part of a reservation per output: the request's cap (or default), clamped
    unless the response will carry no usage (``deferred``)."""
    out = b.default_output if max_output is None else max_output
    return out if deferred else min(out, b.max_output_reserve)


@dataclass(frozen=True, slots=True)
class Ask:
    """One reservation to make: ``amount`` tokens of budget ``budget`` under state ``key``.
    ``group``: the keys reserved together in one backend call (the request's cluster; a
    probation budget's network key is its own group, shared by many clusters)."""

    budget: BudgetDef
    key: str
    amount: int
    output: int  # the output allowance the amount was computed for
    capped: bool = False  # the cap_max_tokens retry
    group: str | None = None
    network: str | None = None  # the network key of a probation budget
    covers: tuple[str | None, ...] | None = None  # a batch: the models it charged for


_NETWORK_KINDS = (("residential_proxy", "ip.residential_proxy"),
                  ("public_proxy", "ip.public_proxy"), ("tor_exit", "ip.tor_exit"),
                  ("anonymous_vpn", "ip.anonymous_vpn"), ("proxy_asn", "ip.proxy_asn"),
                  ("hosting", "ip.hosting"), ("hosting", "ip.hosting_asn"))


def network_key(spec: ProbationSpec, facts: Facts) -> str:
    """The key of the network a probation budget is shared by (its `key` attributes)."""
    ip = facts.client_ip
    attrs: dict[str, str | None] = {}
    for name in spec.key:
        if name == "network":
            sig = facts.signals
            attrs[name] = next((k for k, s in _NETWORK_KINDS if sig.get(s)), None)
        elif name == "ip":  # an IPv6 exit that rotates inside its /64 is one exit
            attrs[name] = None if ip is None else str(ip) if ip.version == 4 else prefix(ip)
        elif name == "prefix":
            attrs[name] = prefix(ip)
        elif name == "asn":
            asn = facts.geo.asn if facts.geo is not None else None
            attrs[name] = str(asn) if asn is not None else None
        elif name == "country":
            attrs[name] = facts.geo.country if facts.geo is not None else None
    return cluster_key(spec.key, attrs)


def plan(budgets: Sequence[BudgetDef], cluster: ClusterRef, facts: Facts,
         established: Callable[[ProbationSpec], bool] | None = None) -> list[Ask]:
    """The asks of every budget that applies to the request, in rules order. A probation
    budget applies only while ``established(spec)`` is false (no answer: not established);
    its ask is at most the pool's smallest window (an oversized request fits a full pool)."""
    asks = []
    for b in budgets:
        covers = None
        if facts.batch is not None:
            parts = batch_math.covered(b, cluster.definition, facts)
            if not parts:
                continue
            amount, out = batch_math.reserve_batch(b, parts)
            covers = tuple(p.model for p in parts)
        else:
            if not b.applies(cluster.definition, facts):
                continue
            out = output_allowance(b, facts.max_output, facts.deferred)
            amount = reserve_amount(b, facts.input_tokens_est, out * facts.choices,
                                    facts.model)
        spec = b.probation
        if spec is None:
            asks.append(Ask(b, f"{b.id}:{cluster.name}", amount, out, group=cluster.name,
                            covers=covers))
        elif established is None or not established(spec):
            net = network_key(spec, facts)
            key = f"{b.id}:net:{net}"
            if covers is None and b.windows:
                # at most the pool's capacity: a request larger than the pool is admitted
                # into an untouched pool (and charged in full) instead of never, so a new
                # account with long prompts can establish itself (batches stay refused)
                amount = min(amount, min(w.limit for w in b.windows))
            asks.append(Ask(b, key, amount, out, group=key, network=net, covers=covers))
    return asks


def cap_retry(ask: Ask, answer: ReserveResult, facts: Facts) -> Ask | None:
    """The capped ask to try when ``ask`` was refused and its budget may cap the output (an
    OpenAI batch cannot be capped: its requests are in a file the proxy does not rewrite)."""
    b = ask.budget
    if answer.ok or _unavailable(answer) or b.shadow or b.on_exceed != "cap_max_tokens" \
            or b.cap_to is None or b.cap_to >= ask.output or facts.api == "openai.batches":
        return None
    if facts.batch is not None:
        parts = [p for p in facts.batch.parts if p.model in (ask.covers or ())]
        amount = batch_math.reserve_batch(b, parts, b.cap_to)[0]
    else:
        amount = reserve_amount(b, facts.input_tokens_est, b.cap_to * facts.choices,
                                facts.model)
    return Ask(b, ask.key, amount, b.cap_to, capped=True, group=ask.group,
               network=ask.network, covers=ask.covers)


def tightest(b: BudgetDef, windows: Sequence[WindowState], amount: int = 0
             ) -> tuple[WindowState | None, float]:
    """(window state, seconds to fit ``amount``) of the window that binds most."""
    best, best_wait = None, -math.inf
    periods = {w.name: w.period_s for w in b.windows}
    for ws in windows:
        wait = (amount - ws.remaining) / (ws.limit / periods.get(ws.name, 1.0))
        if wait > best_wait:
            best, best_wait = ws, wait
    return best, best_wait


@dataclass(slots=True)
class Hold:
    """One budget's granted reservation for one request (settled after the response)."""

    budget: BudgetDef
    reservation: Reservation | None  # None: degraded fail-open (nothing stored)
    amount: int
    remaining: float  # of the tightest window, right after the reservation
    entry: dict[str, Any]  # its decision log entry (charged / remaining set when settled)
    model: str | None  # of the request (model multipliers apply to the charge too)
    key: str = ""  # the state key (a batch record keeps it for refunds)
    group: str | None = None
    covers: tuple[str | None, ...] | None = None  # a batch: the models it charged for


@dataclass(slots=True)
class Outcome:
    """What the budget step decided for one request."""

    refused: bool = False
    rule: str = ""
    reason: str = ""
    retry_after_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)  # rate-limit headers for the client
    max_output_cap: int | None = None  # rewrite the request's output cap to this
    holds: list[Hold] = field(default_factory=list)  # to settle after the response
    release: list[Reservation] = field(default_factory=list)  # to release now
    log: dict[str, Any] = field(default_factory=dict)  # fields for the decision log
    degraded: bool = False  # the state backend was unavailable


def _unavailable(answer: ReserveResult) -> bool:
    """The state could not answer (a fail-closed refusal), as opposed to a fallback that
    answered from its own budget share (backend "local")."""
    return answer.degraded and answer.backend != "local"


def _refusal_reason(ask: Ask, answer: ReserveResult, ws: WindowState | None) -> str:
    b = ask.budget
    if _unavailable(answer):
        return "token budget state is unavailable (fail-closed); try again shortly"
    if b.reason:
        return b.reason
    if ask.network is not None and not answer.never_fits:
        return (f"token budget {b.id!r} for accounts still on probation on this network "
                f"({ask.network}) is spent for window {ws.name if ws else '?'}; retry in "
                f"{math.ceil(answer.retry_after_s)}s")
    if answer.never_fits:
        return (f"request needs {ask.amount} tokens, more than token budget {b.id!r} allows "
                f"per {ws.name if ws else 'window'} ({ws.limit if ws else '?'})")
    return (f"token budget {b.id!r} of this cluster is spent for window "
            f"{ws.name if ws else '?'}; retry in {math.ceil(answer.retry_after_s)}s")


def outcome(asks: Sequence[Ask], answers: Sequence[ReserveResult], facts: Facts,
            now: float) -> Outcome:
    """Read the state's answers to ``asks`` (same order) into the step's outcome."""
    out = Outcome()
    provider, model = facts.provider, facts.model
    entries: list[dict[str, Any]] = []
    shadow_hits: list[dict[str, Any]] = []
    cap: int | None = None
    backends: set[str] = set()
    binding: tuple[WindowState, float] | None = None  # (window state, remaining)
    for i, (ask, r) in enumerate(zip(asks, answers, strict=True)):
        b = ask.budget
        if r.degraded:
            out.degraded = True
            backends.add(r.backend or "none")
        if r.ok:
            ws, _ = tightest(b, r.windows)
            remaining = ws.remaining if ws is not None else float(b.windows[0].limit)
            entry = {"id": b.id, "window": ws.name if ws else b.windows[0].name,
                     "limit": ws.limit if ws else b.windows[0].limit,
                     "reserved": ask.amount, "charged": None, "remaining": floor_tokens(remaining)}
            if ask.network is not None:
                entry["probation"] = ask.network
            if b.shadow:
                entry["shadow"] = True
            if r.degraded:
                entry["degraded"] = True
            if ask.capped:
                entry["capped_to"] = b.cap_to
                cap = b.cap_to if cap is None else min(cap, b.cap_to)
            entries.append(entry)
            out.holds.append(Hold(b, r.reservation, ask.amount, remaining, entry, model,
                                  ask.key, ask.group, ask.covers))
            if not b.shadow and ws is not None and (
                    binding is None or remaining / ws.limit < binding[1] / binding[0].limit):
                binding = (ws, remaining)
            continue
        ws, _ = tightest(b, r.windows, ask.amount)
        entry = {"id": b.id, "window": ws.name if ws else None,
                 "limit": ws.limit if ws else None, "reserved": 0, "charged": 0,
                 "needed": ask.amount, "remaining": floor_tokens(ws.remaining) if ws else None}
        if ask.network is not None:
            entry["probation"] = ask.network
        entries.append(entry)
        if b.shadow:
            entry["shadow"] = True
            shadow_hits.append({"id": b.id, "window": entry["window"], "needed": ask.amount,
                                "remaining": entry["remaining"],
                                "retry_after": round(r.retry_after_s, 3)})
            continue
        # refused by this budget: nothing of this request is kept
        entry["refused"] = True
        out.refused, out.rule, out.retry_after_s = True, b.id, r.retry_after_s
        out.reason = _refusal_reason(ask, r, ws)
        for h in out.holds:
            h.entry["reserved"], h.entry["charged"] = 0, 0
        out.release = [h.reservation for h in out.holds if h.reservation is not None]
        out.release += [a.reservation for a in answers[i + 1:]
                        if a.ok and a.reservation is not None]
        out.holds = []
        if ws is not None:
            out.headers = ratelimit_headers(provider, RateLimitInfo(
                ws.limit, max(0, floor_tokens(ws.remaining)), ws.reset_s), now)
        break
    if not out.refused:
        out.max_output_cap = cap
        if binding is not None:
            ws, remaining = binding
            reset = ws.reset_s if remaining < ws.limit else 0.0
            out.headers = ratelimit_headers(provider, RateLimitInfo(
                ws.limit, max(0, floor_tokens(remaining)), reset), now)
    if entries:
        out.log["budget"] = entries
    if shadow_hits:
        out.log["budget_shadow"] = shadow_hits
    if out.degraded:
        out.log["state_degraded"] = True
        out.log["state_backend"] = "local" if "local" in backends else "none"
    return out


def charge(hold: Hold, usage: Usage | None, *, failed: bool) -> int:
    """Tokens a settled hold is charged: 0 for a failed request, the reservation when the
    usage is unknown, else the weighting of the real usage. Records it in the log entry."""
    if failed:
        actual = 0
    elif usage is None:
        actual = hold.amount  # no usage known: the reservation stands
    else:
        actual = charge_amount(hold.budget, usage, hold.model)
    hold.entry["charged"] = actual
    hold.entry["remaining"] = floor_tokens(hold.remaining + hold.amount - actual)
    return actual
