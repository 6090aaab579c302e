"""Run one described request through the real pipeline, offline, with a rule-by-rule trace.

A request description (`RequestSpec`, the `request:` of a policy test, `--facts-json` of
`hydraguard explain`) becomes a `RequestView`; `Evaluator` drives a `Gateway` (facts ->
decide -> budgets) without a network and without writing a decision log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import apis
from ..decide import Decision
from ..facts import Facts
from ..pipeline import DEMO_SECRET, Gateway, RequestView, header_getter
from ..policy import Policy

DEFAULT_PATH = "/v1/messages"
DEFAULT_MODEL = "claude-sonnet-4-5"


@dataclass
class RequestSpec:
    """A request as a rule author describes it."""

    ip: str = "192.0.2.1"  # the address the proxy sees the connection from (TCP peer)
    method: str = "POST"
    path: str = DEFAULT_PATH
    key: str | None = "sk-test"
    model: str | None = DEFAULT_MODEL
    stream: bool = False
    max_tokens: int | None = None
    prompt: str = "Hello"
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # mapping (sent as JSON), string/bytes (sent as is), None: synthesized
    signals: dict[str, Any] = field(default_factory=dict)  # added after the indicators ran

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> RequestSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(m) - names)
        if unknown:
            raise ValueError(f"unknown request field(s): {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(names))})")
        kw = {k: v for k, v in m.items() if v is not None or k in ("key", "model", "body")}
        if "headers" in kw:
            kw["headers"] = {str(k): str(v) for k, v in kw["headers"].items()}
        if "signals" in kw:
            kw["signals"] = dict(kw["signals"])
        return cls(**kw)

    def body_bytes(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        if self.body is not None:
            return json.dumps(self.body).encode()
        api = apis.api_for_path(self.method, self.path)
        if api is None:
            return b""
        obj: dict[str, Any] = {}
        if self.model is not None:
            obj["model"] = self.model
        if api in (apis.ANTHROPIC_MESSAGES, "anthropic.batches"):
            obj["max_tokens"] = self.max_tokens or 256
            obj["messages"] = [{"role": "user", "content": self.prompt}]
            if api != apis.ANTHROPIC_MESSAGES:  # a one-request Message Batch
                return json.dumps({"requests": [{"custom_id": "r0", "params": obj}]}).encode()
        elif api == apis.OPENAI_CHAT:
            obj["messages"] = [{"role": "user", "content": self.prompt}]
            if self.max_tokens:
                obj["max_completion_tokens"] = self.max_tokens
        else:
            obj["input"] = self.prompt
            if self.max_tokens:
                obj["max_output_tokens"] = self.max_tokens
        if self.stream:
            obj["stream"] = True
        return json.dumps(obj).encode()

    def view(self, request_id: str = "req_explain") -> RequestView:
        headers = {"content-type": "application/json"} if self.method != "GET" else {}
        if self.key:
            api = apis.api_for_path(self.method, self.path)
            if api == apis.ANTHROPIC_MESSAGES or self.path.startswith("/v1/messages"):
                headers["x-api-key"] = self.key
            else:
                headers["authorization"] = f"Bearer {self.key}"
        headers.update({k.lower(): v for k, v in self.headers.items()})
        return RequestView(method=self.method, path=self.path, peer=self.ip,
                           headers=header_getter(headers), body=self.body_bytes(),
                           content_encoding=headers.get("content-encoding", ""),
                           request_id=request_id)


@dataclass
class RuleTrace:
    """One rule as the decision core saw it."""

    id: str
    action: str
    shadow: bool
    outcome: str  # "decides", "shadow match", "no match", "exempt", "not reached"
    detail: str
    where: str = ""


@dataclass
class Evaluation:
    """Everything known about one evaluated request."""

    facts: Facts
    decision: Decision
    trace: list[RuleTrace]
    status: int | None  # the proxy's own answer (None: forwarded upstream)
    budget: dict[str, Any] | None  # budget fields of the decision log, None: no budget step
    budget_note: str = ""
    record: dict[str, Any] = field(default_factory=dict)  # the decision log line
    policy: Any = None  # the policy it was evaluated under


def _region_text(rule: Any, facts: Facts) -> tuple[bool, str]:
    got = rule.region.outcome(facts.geo)
    if got is None:
        g = facts.geo
        if g is not None and g.location_error and not g.is_private:
            return False, "region: passes (GeoIP lookup failed; lookup_error: allow)"
        if g is None or not (g.found or g.is_private):
            return False, f"region: passes (no GeoIP record; no_record: {rule.region.no_record})"
        if g.is_private:
            return False, "region: passes (private address; private: allow)"
        return False, f"region: passes (country {g.country or '-'})"
    outcome, why = got
    return True, f"region: {why} -> {outcome}"


def trace_rules(facts: Facts, policy: Policy, decision: Decision) -> list[RuleTrace]:
    """Why each rule matched or not (the order and logic of `decide.decide`)."""
    out: list[RuleTrace] = []
    builtin = decision.rule in ("non_model_path", "bad_body", "body_too_large")
    decided = False
    for r in policy.rules:
        where = str(r.where) if r.where else ""
        if builtin or decided:
            out.append(RuleTrace(r.id, r.action, r.shadow, "not reached",
                                 f"decided earlier by {decision.rule}", where))
            continue
        parts = []
        if r.when is not None:
            ok = r.when.test(facts)
            parts.append(f"when: {r.when.explain(facts)}")
            if not ok:
                out.append(RuleTrace(r.id, r.action, r.shadow, "no match", "; ".join(parts),
                                     where))
                continue
        else:
            parts.append("when: (always)")
        if r.exempt is not None:
            ex = r.exempt.test(facts)
            parts.append(f"exempt: {r.exempt.explain(facts)}")
            if ex:
                out.append(RuleTrace(r.id, r.action, r.shadow, "exempt", "; ".join(parts),
                                     where))
                continue
        if r.region is not None:
            hit, text = _region_text(r, facts)
            parts.append(text)
            if not hit:
                out.append(RuleTrace(r.id, r.action, r.shadow, "no match", "; ".join(parts),
                                     where))
                continue
        if r.id == decision.rule and not decision.shadow:
            outcome, decided = "decides", True
        elif r.id in decision.shadow_rules or (decision.shadow and r.id == decision.rule):
            outcome = "shadow match"
        else:
            outcome = "match"
        out.append(RuleTrace(r.id, r.action, r.shadow, outcome, "; ".join(parts), where))
    return out


def refusal_status(facts: Facts, d: Decision) -> int | None:
    """HTTP status of the proxy's own answer, None when the request is forwarded."""
    if not d.enforced:
        return None
    status, _, _ = apis.error_response(facts.api, facts.provider, d.kind or "permission",
                                       d.reason, request_id=facts.request_id or "req",
                                       retry_after=d.retry_after_s)
    return status


def offline_policy(policy: Policy) -> tuple[Policy, str]:
    """The policy with budget state kept in memory (tools never touch a shared Redis)."""
    b = policy.budgets
    st = getattr(b, "state", None)
    if st is None or getattr(st, "backend", "memory") == "memory":
        return policy, ""
    try:
        b2 = dataclasses.replace(b, state=dataclasses.replace(st, backend="memory"))
        return dataclasses.replace(policy, budgets=b2), \
            "budget state: in memory for this tool (the rules say redis)"
    except (TypeError, ValueError):  # not dataclasses: leave as is
        return policy, ""


def account_secret(policy: Policy) -> tuple[bytes, str]:
    env = policy.settings.account_secret_env
    v = os.environ.get(env, "")
    if v:
        return v.encode(), f"account secret from ${env}"
    return DEMO_SECRET, f"account secret: demo (${env} is not set)"


class Evaluator:
    """A Gateway for offline evaluation. Budget state (memory) lives as long as this object,
    so consecutive requests see each other's reservations."""

    def __init__(self, policy: Policy, *, clock: Callable[[], float] = time.time,
                 budgets: str = "admit") -> None:
        """budgets: "admit" (reserve like the proxy, on this tool's own in-memory state that
        carries over between requests) or "off"."""
        self.policy, self.notes = policy, []
        pol, note = offline_policy(policy)
        if note:
            self.notes.append(note)
        secret, snote = account_secret(policy)
        self.notes.append(snote)
        self.gateway = Gateway(pol, log_path="-", secret=secret, clock=clock)
        self.budgets = budgets
        self._n = 0

    def close(self) -> None:
        self.gateway.close()

    async def aclose(self) -> None:
        await self.gateway.aclose()

    async def evaluate(self, spec: RequestSpec) -> Evaluation:
        gw = self.gateway
        self._n += 1
        view = spec.view(f"req_hgtool{self._n:06d}")
        t0 = time.perf_counter_ns()
        ex = gw.begin(view, extra_signals=spec.signals, batch=await gw.preparse(view))
        facts = ex.facts
        rule_decision = ex.decision
        budget: dict[str, Any] | None = None
        note = ""
        if rule_decision.enforced:
            note = "not reached (the rules refused the request)"
        elif facts.api is None:
            note = "not a model call (no budget step)"
        elif self.budgets == "off":
            note = "budgets not evaluated"
        elif gw.policy.budgets is None:
            note = "no budgets configured"
        else:
            await gw.admit(ex)
            budget = dict(ex.admission.log) if ex.admission else {}
            note = "budget state: this tool's own in-memory state (starts full)"
        ex.decision_us = (time.perf_counter_ns() - t0) // 1000
        d = ex.decision
        status = refusal_status(facts, d)
        record = gw.record(ex, status=status, usage=None, usage_source=None, error=None,
                           answered_by_proxy=status is not None)
        return Evaluation(facts, d, trace_rules(facts, gw.policy, rule_decision), status,
                          budget, note, record, gw.policy)
