"""Batches through the proxy, from submission to settlement (the Gateway's batch desk).

Submission. An Anthropic Message Batch body is parsed in a worker thread (`preparse`); an
OpenAI batch names an input file whose estimate was kept when it was uploaded through the
proxy (`uploaded`; a file the proxy has no estimate for makes the batch unmetered: refused).
The batch is decided by the rules per model and charged by the budget step as one ask per
budget for the whole batch, as final: nothing settles it at the response. What it was charged
is recorded under the batch id the upstream answers (`submitted`).

Settlement. Reading the results through the proxy (``GET /v1/messages/batches/{id}/results``,
``GET /v1/files/{output file}/content``: metered as they stream) settles the batch to its real
usage, exactly, once every result went through (`results`). A batch object that says the batch
ended with requests that never ran (cancelled, expired, errored) gives back at least what those
requests were charged, never more (`objects`, budgets/batch_math.py). Either way the tokens go
back to (or come from) the cluster's current budget windows, once (budgets/records.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .apis import routes
from .apis.batch_parse import BatchParse, anthropic_batch_with_max_output, parse_anthropic_batch
from .apis.batch_results import ResultsMeter, batch_states, rewrite_results_urls
from .apis.batches import SAMPLE, BatchSummary, part_of
from .apis.multipart import boundary_of
from .apis.usage import Usage
from .budgets import batch_math
from .gather import decode_body, set_signals
from .uploads import UploadSpool

if TYPE_CHECKING:
    from .budgets.driver import BudgetDriver
    from .budgets.records import RecordStore
    from .pipeline import Exchange, RequestView
    from .policy import Policy
    from .signals.collect import SignalCollector

log = logging.getLogger("hydraguard")

__all__ = ["BatchDesk", "BatchSide"]

MAX_OBJECTS = 10  # ended batches of one listing that are looked up


@dataclass(slots=True)
class BatchSide:
    """A batch submission's parse and raw body (for an output cap rewrite)."""

    parse: BatchParse
    raw: bytes = b""
    encoding: str = ""


@dataclass(slots=True)
class ResultsSide:
    """Results of a batch this proxy charged (looked up before the response arrives, so
    only those are metered): its record key and how many result lines settle it."""

    key: str
    expected: int | None
    meter: ResultsMeter | None = None


def _yield_gil() -> None:
    time.sleep(0)  # a worker thread hands the GIL to the event loop (convoy effect)


def _json(body: bytes | None) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, TypeError, RecursionError):
        return None


class BatchDesk:
    """See the module doc. One per Gateway (one policy)."""

    def __init__(self, policy: Policy, records: RecordStore | None, budgets: BudgetDriver,
                 signals: SignalCollector, clock: Callable[[], float]) -> None:
        self.settings = s = policy.settings
        self.records = records
        self.budgets = budgets
        self.signals = signals
        self.clock = clock
        self.ttl = s.batch_record_ttl

    # -- request side ---------------------------------------------------------------------
    def body_cap(self, route: routes.Route) -> int:
        """Largest request body accepted on ``route``."""
        s = self.settings
        if route.kind == routes.UPLOAD:
            return s.max_upload_bytes
        if route.api == routes.ANTHROPIC_BATCHES:
            return s.max_batch_body_bytes
        return s.max_body_bytes

    async def preparse(self, req: RequestView, route: routes.Route
                       ) -> BatchSide | ResultsSide | None:
        """A batch submission parsed before it is decided (the Anthropic body in a worker
        thread, the OpenAI input file's estimate from the records); for a results read, the
        batch it settles (None: not a batch this proxy charged, nothing to meter)."""
        if route.api == routes.ANTHROPIC_BATCHES:
            return await asyncio.to_thread(self.parse_anthropic, req)
        if route.api == routes.OPENAI_BATCHES:
            return BatchSide(await self._openai(req))
        if self.records is None or route.ident is None:
            return None
        if route.kind == routes.RESULTS:
            rec = await self.records.get(f"batch:anthropic:{route.ident}")
            return None if rec is None else ResultsSide(f"batch:anthropic:{route.ident}",
                                                        int(rec[0]["requests"]))
        if route.kind == routes.FILE_CONTENT:
            out = await self.records.get(f"out:{route.ident}")
            if out is not None:
                c = out[0].get("completed")
                return ResultsSide(str(out[0].get("batch")), None if c is None else int(c))
        return None

    def unparsed(self, req: RequestView, route: routes.Route) -> BatchSide | None:
        """`preparse` for offline tools that call `Gateway.begin` without it: an Anthropic
        batch is parsed here (blocking); an OpenAI batch, whose file estimate lives in the
        records, is unmetered."""
        if route.api == routes.ANTHROPIC_BATCHES:
            return self.parse_anthropic(req)
        if route.api == routes.OPENAI_BATCHES:
            return BatchSide(BatchParse(None, unmetered_reason="the batch's input file was "
                                        "not looked up"))
        return None

    def parse_anthropic(self, req: RequestView) -> BatchSide:
        """Parse a Message Batches body (blocking: a worker thread, or an offline tool)."""
        s = self.settings
        body, err = decode_body(req.body, req.content_encoding, s.max_batch_body_bytes)
        if body is None:
            return BatchSide(BatchParse(None, error=err))
        return BatchSide(parse_anthropic_batch(body, max_requests=s.max_batch_requests,
                                               sample=SAMPLE, pause=_yield_gil),
                         req.body, req.content_encoding)

    async def _openai(self, req: RequestView) -> BatchParse:
        body, err = decode_body(req.body, req.content_encoding, self.settings.max_body_bytes)
        obj = _json(body)
        if body is None or not isinstance(obj, dict):
            return BatchParse(None, error=err or "body is not a JSON object")
        fid = obj.get("input_file_id")
        if not isinstance(fid, str) or not fid:
            return BatchParse(None, error="input_file_id missing")
        rec = await self.records.get(f"file:{fid}") if self.records is not None else None
        if rec is None:
            return BatchParse(None, ident=fid, unmetered_reason=(
                f"input file {fid} was not uploaded through this proxy (or is forgotten): "
                "what the batch would spend is not known"))
        doc = rec[0]
        why = None
        if doc.get("unmetered"):
            why = (f"input file {fid} has {doc['unmetered']} line(s) this proxy cannot "
                   "estimate (not JSON, too long, or not a metered endpoint)")
        elif doc.get("error") or not doc.get("summary"):
            why = f"input file {fid} is not a batch file this proxy could estimate: " \
                  f"{doc.get('error') or 'no requests'}"
        if why is not None:
            return BatchParse(None, ident=fid, unmetered_reason=why)
        return BatchParse(BatchSummary.from_json(doc["summary"]), ident=fid,
                          signals=dict(doc.get("signals") or {}),
                          endpoints=tuple(doc.get("endpoints") or ()))

    async def capped_body(self, ex: Exchange, cap: int) -> bytes | None:
        """An Anthropic batch body with every request's max_tokens lowered to ``cap``."""
        side = ex.side
        if not isinstance(side, BatchSide) or ex.facts.api != routes.ANTHROPIC_BATCHES:
            return None

        def rewrite() -> bytes | None:
            body, _ = decode_body(side.raw, side.encoding, self.settings.max_batch_body_bytes)
            return None if body is None else anthropic_batch_with_max_output(body, cap)

        return await asyncio.to_thread(rewrite)

    def upload_stream(self, ex: Exchange, content_type: str | None) -> Any:
        """The request stream callable of an upload: an `UploadSpool` for an OpenAI
        multipart upload (estimated on the way), else plain streaming (True)."""
        boundary = boundary_of(content_type)
        if ex.facts.provider != "openai" or boundary is None:
            return True
        s = self.settings
        spool = UploadSpool(boundary, s.max_upload_bytes, max_requests=s.max_batch_requests)
        if not spool.start():
            ex.extra["upload"] = {"estimated": False, "why": "too many uploads being parsed"}
            return True
        ex.side = spool
        return spool

    # -- response side -------------------------------------------------------------------
    def response_stream(self, ex: Exchange, status: int) -> ResultsMeter | None:
        """A meter for the results of a batch this proxy charged (a stream callable), None
        for other responses."""
        side = ex.side
        if status != 200 or not isinstance(side, ResultsSide):
            return None
        side.meter = ResultsMeter("anthropic" if ex.facts.route == routes.RESULTS
                                  else "openai")
        return side.meter

    def rewrite(self, ex: Exchange, status: int, body: bytes | None) -> bytes | None:
        """A batch object with its results_url sent through the proxy (None: unchanged)."""
        if status != 200 or not body or ex.facts.route not in (routes.BATCH,
                                                               routes.BATCH_OBJECT):
            return None
        return rewrite_results_urls(body, self.settings.public_base_url)

    async def finish(self, ex: Exchange, status: int | None, body: bytes | None,
                     error: str | None) -> dict[str, Any]:
        """Log fields of a batch-related request, after recording or settling what it says."""
        kind = ex.facts.route
        if kind == routes.BATCH:
            return await self.submitted(ex, status, body)
        if kind == routes.UPLOAD:
            return await self.uploaded(ex, status, body, error)
        if self.records is None or status != 200 or error:
            return {}
        if kind == routes.BATCH_OBJECT:
            return await self.objects(body)
        side = ex.side
        if isinstance(side, ResultsSide) and side.meter is not None:
            return await self.results(side, side.meter)
        return {}

    async def submitted(self, ex: Exchange, status: int | None, body: bytes | None
                        ) -> dict[str, Any]:
        f, side = ex.facts, ex.side
        parse = side.parse if isinstance(side, BatchSide) else None
        b = f.batch
        entry: dict[str, Any] = {"id": None}
        if f.api == routes.OPENAI_BATCHES:
            entry["input_file_id"] = f.ident
        if b is not None:
            holds = ex.admission.outcome.holds if ex.admission is not None else []
            entry.update(requests=b.requests, input_tokens_est=b.input_tokens,
                         output_tokens=b.output_tokens(0),
                         uncapped_outputs=sum(o * n for p in b.parts
                                              for c, o, n in p.outputs if c is None),
                         tokens_reserved=max((h.amount for h in holds if not h.budget.shadow),
                                             default=0),
                         errors=b.errors, summary=b.to_json())
            if parse is not None and parse.sample:
                entry.update(prompts_observed=len(parse.sample), sampled=parse.sampled)
        obj = _json(body) if status is not None and status < 300 else None
        bid = obj.get("id") if isinstance(obj, dict) else None
        if not isinstance(bid, str) or b is None or ex.admission is None or \
                ex.decision.enforced:
            return {"batch": entry}
        entry["id"] = bid
        charges = [{"budget": h.budget.id, "key": h.key, "group": h.group,
                    "covers": list(h.covers or ()), "charged": int(h.entry.get("charged") or 0)}
                   for h in ex.admission.outcome.holds]
        charges = [c for c in charges if c["charged"] > 0]
        if charges and self.records is not None:
            doc = {"provider": f.provider, "id": bid, "cluster": f.cluster,
                   "requests": b.requests, "summary": b.to_json(), "charges": charges,
                   "ts": self.clock()}
            entry["recorded"] = await self.records.put(
                f"batch:{f.provider}:{bid}", doc, self.ttl,
                {c["budget"]: c["charged"] for c in charges})
        return {"batch": entry}

    async def uploaded(self, ex: Exchange, status: int | None, body: bytes | None,
                       error: str | None) -> dict[str, Any]:
        spool = ex.side
        entry: dict[str, Any] = dict(ex.extra.get("upload") or {})
        if not isinstance(spool, UploadSpool):
            return {"upload": entry} if entry else {}
        if error or status is None:
            spool.abort()
            return {"upload": {"estimated": False, "why": error or "no response"}}
        res = await spool.result()
        obj = _json(body) if status < 300 else None
        fid = obj.get("id") if isinstance(obj, dict) else None
        entry.update(file_id=fid, purpose=",".join(res.fields.get("purpose") or ()) or None,
                     bytes=res.bytes)
        p = res.parse
        if res.error or p is None:
            entry.update(estimated=False, why=res.error or "no file part")
            return {"upload": entry}
        s = p.summary
        entry.update(estimated=s is not None and not p.unmetered and p.error is None,
                     requests=s.requests if s else 0, unmetered=p.unmetered,
                     input_tokens_est=s.input_tokens if s else 0,
                     output_tokens=s.output_tokens(0) if s else 0, error=p.error,
                     endpoints=list(p.endpoints))
        out: dict[str, Any] = {"upload": entry}
        if not isinstance(fid, str) or not res.purpose_batch or self.records is None:
            return out
        found = self.signals.observe_prompts(ex.facts, p.sample) if p.sample else {}
        if found:
            set_signals(ex.facts, found)
            out["signals"] = dict(ex.facts.signals)
            entry.update(prompts_observed=len(p.sample), sampled=p.sampled)
        doc = {**p.to_json(), "signals": found, "account": ex.facts.account,
               "ts": self.clock()}
        entry["recorded"] = await self.records.put(f"file:{fid}", doc, self.ttl)
        return out

    async def objects(self, body: bytes | None) -> dict[str, Any]:
        """Batch objects: an OpenAI output file is tied to its batch; an ended batch with
        requests that never ran gets back what they were charged at least."""
        assert self.records is not None
        settled = []
        for st in [s for s in batch_states(body or b"") if s.ended][:MAX_OBJECTS]:
            key = f"batch:{st.provider}:{st.id}"
            rec = await self.records.get(key)
            if rec is None:
                continue
            doc, nets, exact = rec
            if st.output_file_id is not None:
                await self.records.put(f"out:{st.output_file_id}",
                                       {"batch": key, "completed": st.succeeded}, self.ttl)
            unused = int(doc["requests"]) - (st.succeeded or 0)
            if exact or st.succeeded is None or unused <= 0:
                continue
            summary = BatchSummary.from_json(doc["summary"])
            targets = {}
            for c in doc["charges"]:
                b = self.budgets.budget(c["budget"])
                if b is not None:
                    parts = [p for p in summary.parts if p.model in c["covers"]]
                    targets[c["budget"]] = c["charged"] - batch_math.unused_refund(
                        b, summary, parts, unused)
            got = await self._settle(key, doc, nets, targets, "lower")
            if got and any(g["change"] for g in got):
                settled.append({"id": st.id, "mode": "unused", "requests": doc["requests"],
                                "unused": unused, "budgets": got})
        return {"batch_settle": settled} if settled else {}

    async def results(self, side: ResultsSide, meter: ResultsMeter) -> dict[str, Any]:
        """Every result went through: settle the batch to its real usage."""
        assert self.records is not None
        rec = await self.records.get(side.key)
        if rec is None:
            return {}
        doc, nets, _ = rec
        summary = BatchSummary.from_json(doc["summary"])
        expected = side.expected
        entry: dict[str, Any] = {"id": doc["id"], "mode": "results", "results": meter.lines,
                                 "succeeded": meter.succeeded}
        by_part: dict[str | None, list[Usage]] = {}
        whole = meter.ended and meter.unreadable == 0 and meter.lines == expected
        for model, u in meter.usage().items():
            part = part_of(model, summary.models)
            if part is False:
                whole = False
                break
            by_part.setdefault(part, []).append(u)  # type: ignore[arg-type]
        if not whole:
            entry["settled"] = False
            return {"batch_settle": [entry]}
        usage = {m: _total(us) for m, us in by_part.items()}
        entry["input_tokens"] = sum(u.total_input for u in usage.values())
        entry["output_tokens"] = sum(u.output_tokens for u in usage.values())
        targets = {}
        for c in doc["charges"]:
            b = self.budgets.budget(c["budget"])
            if b is not None:
                targets[c["budget"]] = batch_math.exact_charge(
                    b, {m: u for m, u in usage.items() if m in c["covers"]})
        got = await self._settle(side.key, doc, nets, targets, "exact")
        entry["budgets"] = got or []
        entry["settled"] = got is not None
        return {"batch_settle": [entry]}

    async def _settle(self, key: str, doc: dict[str, Any], nets: dict[str, int],
                      targets: dict[str, int], mode: str) -> list[dict[str, Any]] | None:
        assert self.records is not None
        moves = await self.records.settle(key, targets, mode)
        if moves is None:
            return None
        applied = await self.budgets.adjust(doc["charges"], moves)
        return [{"id": c["budget"], "charged": c["charged"],
                 "now": nets.get(c["budget"], c["charged"]) + moves.get(c["budget"], 0),
                 "change": moves.get(c["budget"], 0), **applied.get(c["budget"], {})}
                for c in doc["charges"] if c["budget"] in moves]


def _total(us: list[Usage]) -> Usage:
    return Usage(sum(u.input_tokens for u in us), sum(u.output_tokens for u in us),
                 sum(u.cache_creation_input_tokens for u in us),
                 sum(u.cache_read_input_tokens for u in us))
