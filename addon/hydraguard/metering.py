"""Cluster resolution and token budgets for the pipeline (issue #5).

Per model call:

1. ``resolve_cluster`` (sync, CPU only): the first cluster definition whose ``when`` holds
   decides the cluster; its key is built from request attributes (``clusters.cluster_key``).
   With ``link:``, the account is first observed with its evidence (IP, /24 prefix, JA4 +
   User-Agent, prompt template) in that definition's ``ClusterLinker`` and the ``cluster``
   attribute is the account's linked cluster id (``h-…``, stable, see clusters.py).
   ``facts.cluster`` becomes ``"<definition id>:<key>"``.
2. ``admit`` (the only await before forwarding): for every budget that applies, reserve
   ``ceil((w_in * input estimate + w_out * min(max_output, max_output_reserve)) * multiplier)``
   atomically in all of its windows. A budget that does not fit refuses (429 with retry-after
   and the provider's token rate-limit headers; reservations already made for other budgets
   are released), or lowers the output cap (``on_exceed: cap_max_tokens``), or, in shadow
   mode, only logs ``budget_shadow``. A refused shadow request is not charged, so the shadow
   bucket follows exactly what enforcement would have let through.
3. ``settle``: the reservation is replaced by the same weighting of the real usage (JSON
   ``usage``, SSE usage, or the stream meter's estimate of what a cut stream delivered);
   a failed request releases it; a 2xx response without usage keeps the reservation.

Link state: in memory per replica with the memory backend. With the Redis backend the link
evidence and the union-find are shared too (budgets/redis_links.py, one Lua script per linked
request in ``admit``): every replica names an operator's accounts after the same first-seen
member, so one budget applies whichever replica a request reaches. If Redis fails, the
replica's in-memory linking answer is used for that request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .addresses import prefix
from .apis import RateLimitInfo, ratelimit_headers
from .budgets import MemoryBudgetState, RedisBudgetState, Reservation, ReserveResult
from .budgets.redis_links import RedisLinks
from .clusters import ClusterLinker, cluster_key
from .facts import Facts

log = logging.getLogger("hydraguard")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_EPS = 1e-9


@dataclass(slots=True)
class Admission:
    """Outcome of the budget step for one request."""

    refused: bool = False
    kind: str = "rate_limit"
    reason: str = ""
    rule: str = ""
    retry_after_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)  # rate-limit headers for the client
    max_output_cap: int | None = None  # rewrite the request's output cap to this
    shadow: bool = False
    state: Any = None  # reservations etc., for settle()
    log: dict[str, Any] = field(default_factory=dict)  # fields for the decision log
    degraded: bool = False  # the state backend was unavailable


@dataclass(slots=True)
class _Hold:
    """One budget's reservation for one request."""

    budget: Any  # policy.budget_sections.BudgetDef
    reservation: Reservation | None  # None: degraded fail-open (nothing stored)
    amount: int
    remaining: float  # of the tightest window, right after the reservation
    entry: dict[str, Any]  # the decision log entry (updated by settle)
    model: str | None


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - _EPS))


def reserve_amount(b: Any, input_est: int, output: int, model: str | None) -> int:
    """Tokens reserved by budget ``b`` for an input estimate and an output allowance."""
    total = 0.0
    if b.count != "output":
        total += b.w_input * input_est
    if b.count != "input":
        total += b.w_output * output
    return _ceil(total * b.multiplier(model))


def charge_amount(b: Any, usage: Any, model: str | None) -> int:
    """Tokens charged by budget ``b`` for a real ``apis.Usage``."""
    total = 0.0
    if b.count != "output":
        total += (b.w_input * usage.input_tokens + b.w_cache_read * usage.cache_read_input_tokens
                  + b.w_cache_creation * usage.cache_creation_input_tokens)
    if b.count != "input":
        total += b.w_output * usage.output_tokens
    return _ceil(total * b.multiplier(model))


def output_allowance(b: Any, max_output: int | None) -> int:
    """The output part of a reservation: the request's cap (or default), clamped."""
    out = b.default_output if max_output is None else max_output
    return min(out, b.max_output_reserve)


def _tightest(b: Any, r: ReserveResult, amount: int = 0) -> tuple[Any, float]:
    """(WindowState, seconds to fit ``amount``) of the window that binds most."""
    best, best_wait = None, -math.inf
    periods = {w.name: w.period_s for w in b.windows}
    for ws in r.windows:
        rate = ws.limit / periods.get(ws.name, 1.0)
        wait = (amount - ws.remaining) / rate
        if wait > best_wait:
            best, best_wait = ws, wait
    return best, best_wait


def make_state(cfg: Any, clock: Callable[[], float]) -> Any:
    """The BudgetState of a compiled ``state:`` section."""
    if cfg.backend == "redis":
        url = cfg.redis_url or os.environ.get(cfg.redis_url_env or "", "") or DEFAULT_REDIS_URL
        return RedisBudgetState(
            url, prefix=cfg.prefix, timeout_ms=cfg.timeout_ms, on_error=cfg.on_error,
            clock=clock, reservation_ttl_s=cfg.reservation_ttl_s,
            down_backoff_s=cfg.retry_after_s, closed_retry_after_s=cfg.retry_after_s,
            max_connections=cfg.max_connections)
    return MemoryBudgetState(cfg.max_keys, clock, reservation_ttl_s=cfg.reservation_ttl_s)


class Metering:
    """Resolves clusters and reserves / settles token budgets."""

    def __init__(self, settings: Any, clock: Callable[[], float], *, state: Any = None) -> None:
        self.settings = settings
        self.clock = clock
        self.linkers: dict[str, ClusterLinker] = {}
        self.state = state
        self._budgets: tuple[Any, ...] = ()
        if settings is None:
            return
        for c in settings.clusters:
            if c.link is not None:
                self.linkers[c.id] = ClusterLinker(
                    c.link.window_s, c.link.max_nodes, c.link.rules, clock)
        self._budgets = settings.budgets
        if self._budgets and self.state is None:
            self.state = make_state(settings.state, clock)
        self.shared_links: dict[str, RedisLinks] = {}
        self._make_shared_links()

    def _make_shared_links(self) -> None:
        """With the Redis backend, link evidence and cluster ids are shared by all replicas
        (budgets/redis_links.py); the in-memory linker stays as the fallback answer."""
        self.shared_links = {}
        if self.settings is None or not isinstance(self.state, RedisBudgetState):
            return
        for c in self.settings.clusters:
            if c.link is not None:
                self.shared_links[c.id] = RedisLinks(self.state, c.id, c.link.window_s,
                                                     c.link.rules)

    def adopt(self, old: Metering) -> None:
        """Hot reload: take over the budget levels (same `state:` settings) and the link
        evidence of cluster definitions whose id and `link:` are unchanged."""
        new, prev = self.settings, old.settings
        if new is None or prev is None:
            return
        if self._budgets and old.state is not None and new.state == prev.state:
            self.state = old.state  # the fresh one built in __init__ has opened nothing yet
            self._make_shared_links()
        old_links = {c.id: c.link for c in prev.clusters}
        for c in new.clusters:
            if c.id in self.linkers and c.id in old.linkers and old_links.get(c.id) == c.link:
                self.linkers[c.id] = old.linkers[c.id]

    # -- clusters ----------------------------------------------------------------------------
    def resolve_cluster(self, facts: Facts) -> None:
        """Set `facts.cluster` (sync, CPU only)."""
        cfg = self.settings
        if cfg is None or facts.api is None:
            return
        for c in cfg.clusters:
            if c.when is None or c.when.test(facts):
                break
        else:
            return
        attrs: dict[str, str | None] = {}
        ip = facts.client_ip
        for name in c.key:
            if name == "account":
                attrs[name] = facts.account
            elif name == "ip":
                attrs[name] = str(ip) if ip is not None else None
            elif name == "prefix":
                attrs[name] = prefix(ip)
            elif name == "asn":
                asn = getattr(facts.geo, "asn", None) if facts.geo is not None else None
                attrs[name] = str(asn) if asn is not None else None
            elif name == "country":
                attrs[name] = getattr(facts.geo, "country", None) if facts.geo else None
            elif name == "ja4":
                attrs[name] = facts.signals.get("tls.ja4")
            elif name == "api":
                attrs[name] = facts.api
            elif name == "model":
                attrs[name] = facts.model
        linker = self.linkers.get(c.id)
        if linker is not None:
            acct = facts.account
            if acct is None:
                attrs["cluster"] = None
            else:
                linker.observe(acct, self._evidence(facts))
                attrs["cluster"] = linker.cluster_of(acct)
        facts.cluster = f"{c.id}:{cluster_key(c.key, attrs)}"
        facts.cluster_parts = (c, attrs)

    @staticmethod
    def _evidence(facts: Facts) -> dict[str, str | None]:
        ip = facts.client_ip
        sig = facts.signals
        ja4 = sig.get("tls.ja4")
        tpl = sig.get("template.id")
        return {
            "ip": str(ip) if ip is not None else None,
            "prefix": prefix(ip),
            "tls_ua": f"{ja4}|{facts.user_agent}" if ja4 else None,
            "template": str(tpl) if tpl else None,
        }

    # -- budgets -----------------------------------------------------------------------------
    async def admit(self, facts: Facts) -> Admission:
        """Reserve tokens before forwarding. Never raises (a state error fails open)."""
        if not self._budgets or facts.cluster is None:
            return Admission()
        try:
            return await self._admit(facts)
        except Exception as e:  # a bug must not take the proxy down: fail open, say so
            log.exception("hydraguard: budget admission failed")
            return Admission(log={"budget_error": f"{type(e).__name__}: {e}"})

    def _rekey(self, facts: Facts, shared: str | None) -> bool:
        """Use the shared linked cluster id; True if the cluster changed."""
        c, attrs = facts.cluster_parts
        if shared is None or shared == attrs.get("cluster"):
            return False
        attrs = {**attrs, "cluster": shared}
        facts.cluster = f"{c.id}:{cluster_key(c.key, attrs)}"
        facts.cluster_parts = (c, attrs)
        return True

    def _share_link(self, facts: Facts) -> asyncio.Future[str | None] | None:
        """Start re-keying a linked cluster with the id all replicas agree on (Redis).

        The reservation goes ahead at once under the best id known here (the shared answer
        to the account's previous request, else this replica's own linking) while the
        evidence is recorded in Redis; the returned future tells the caller whether the
        shared id differs, so it can move the reservation (a merge, or a replica that had
        not seen enough evidence yet). On a Redis error the local answer stands."""
        parts = facts.cluster_parts
        if parts is None or facts.account is None:
            return None
        links = self.shared_links.get(parts[0].id)
        if links is None:
            return None
        known = links.last_answer(facts.account)
        if known is not None:
            self._rekey(facts, known)
        return asyncio.ensure_future(links.cluster_of(facts.account, self._evidence(facts)))

    async def _admit(self, facts: Facts) -> Admission:
        pending = self._share_link(facts) if self.shared_links else None
        adm = await self._reserve_all(facts)
        if pending is not None and self._rekey(facts, await pending):
            # the operator's accounts were merged meanwhile: charge the new cluster instead
            if adm.state:
                await self._release_all(adm.state)
            adm = await self._reserve_all(facts)
        return adm

    async def _reserve_all(self, facts: Facts) -> Admission:
        cdef, _, _key = facts.cluster.partition(":")
        state = self.state
        holds: list[_Hold] = []
        entries: list[dict[str, Any]] = []
        shadow_hits: list[dict[str, Any]] = []
        adm = Admission(state=holds)
        cap: int | None = None
        binding: tuple[Any, float, Any] | None = None  # (WindowState, remaining, budget)
        for b in self._budgets:
            if not b.applies(cdef, facts):
                continue
            out = output_allowance(b, facts.max_output)
            amount = reserve_amount(b, facts.input_tokens_est, out, facts.model)
            skey = f"{b.id}:{facts.cluster}"
            r = await state.reserve(skey, b.windows, amount)
            if r.degraded:
                adm.degraded = True
            capped_here = False
            if not r.ok and not r.degraded and not b.shadow and b.on_exceed == "cap_max_tokens" \
                    and b.cap_to is not None and b.cap_to < out:
                capped = reserve_amount(b, facts.input_tokens_est, b.cap_to, facts.model)
                r2 = await state.reserve(skey, b.windows, capped)
                if r2.ok:
                    r, amount, capped_here = r2, capped, True
                    cap = b.cap_to if cap is None else min(cap, b.cap_to)
            if r.ok:
                ws, _ = _tightest(b, r)
                remaining = ws.remaining if ws is not None else float(b.windows[0].limit)
                entry = {"id": b.id, "window": ws.name if ws else b.windows[0].name,
                         "limit": ws.limit if ws else b.windows[0].limit,
                         "reserved": amount, "charged": None,
                         "remaining": math.floor(remaining + _EPS)}
                if b.shadow:
                    entry["shadow"] = True
                if r.degraded:
                    entry["degraded"] = True
                if capped_here:
                    entry["capped_to"] = b.cap_to
                entries.append(entry)
                holds.append(_Hold(b, r.reservation, amount, remaining, entry, facts.model))
                if not b.shadow and ws is not None and (
                        binding is None or remaining / ws.limit < binding[1] / binding[0].limit):
                    binding = (ws, remaining, b)
                continue
            # refused by this budget
            ws, _ = _tightest(b, r, amount)
            entry = {"id": b.id, "window": ws.name if ws else None,
                     "limit": ws.limit if ws else None, "reserved": 0, "charged": 0,
                     "needed": amount,
                     "remaining": math.floor(ws.remaining + _EPS) if ws else None}
            if b.shadow:
                entry["shadow"] = True
                entries.append(entry)
                shadow_hits.append({"id": b.id, "window": entry["window"], "needed": amount,
                                    "remaining": entry["remaining"],
                                    "retry_after": round(r.retry_after_s, 3)})
                continue
            entry["refused"] = True
            entries.append(entry)
            await self._release_all(holds)
            for h in holds:
                h.entry["reserved"], h.entry["charged"] = 0, 0
            holds.clear()
            adm.refused = True
            adm.rule = b.id
            adm.retry_after_s = r.retry_after_s
            if r.degraded:
                adm.reason = ("token budget state is unavailable (fail-closed); "
                              "try again shortly")
            elif r.never_fits:
                adm.reason = b.reason or (
                    f"request needs {amount} tokens, more than token budget {b.id!r} allows "
                    f"per {ws.name if ws else 'window'} ({ws.limit if ws else '?'})")
            else:
                adm.reason = b.reason or (
                    f"token budget {b.id!r} of this cluster is spent for window "
                    f"{ws.name if ws else '?'}; retry in {math.ceil(r.retry_after_s)}s")
            if ws is not None:
                adm.headers = ratelimit_headers(facts.provider, RateLimitInfo(
                    ws.limit, max(0, math.floor(ws.remaining + _EPS)), ws.reset_s),
                    self.clock())
            break
        if not adm.refused:
            adm.max_output_cap = cap
            if binding is not None:
                ws, remaining, _b = binding
                reset = ws.reset_s if remaining < ws.limit else 0.0
                adm.headers = ratelimit_headers(facts.provider, RateLimitInfo(
                    ws.limit, max(0, math.floor(remaining + _EPS)), reset), self.clock())
        if entries:
            adm.log["budget"] = entries
        if shadow_hits:
            adm.log["budget_shadow"] = shadow_hits
        if adm.degraded:
            adm.log["state_degraded"] = True
        return adm

    async def _release_all(self, holds: list[_Hold]) -> None:
        for h in holds:
            if h.reservation is not None:
                await self.state.release(h.reservation)

    async def settle(self, admission: Admission, usage: Any, *, failed: bool) -> dict[str, Any]:
        """Replace the reservation with real usage (or release it). Returns log fields."""
        holds: list[_Hold] | None = admission.state
        if holds:
            admission.state = None  # settle once
            for h in holds:
                if failed:
                    actual = 0
                elif usage is None:
                    actual = h.amount  # no usage known: the reservation stands
                else:
                    actual = charge_amount(h.budget, usage, h.model)
                if h.reservation is not None:
                    if actual == 0:
                        await self.state.release(h.reservation)
                    else:
                        await self.state.commit(h.reservation, actual)
                h.entry["charged"] = actual
                h.entry["remaining"] = math.floor(h.remaining + h.amount - actual + _EPS)
        return dict(admission.log)

    async def close(self) -> None:
        """Close state backends."""
        if self.state is not None:
            await self.state.close()
