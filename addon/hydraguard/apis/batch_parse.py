"""Parsing batch submissions: an Anthropic Message Batches body, the lines of an OpenAI batch
input file, and the output cap rewrite of a batch. CPU work in bounded memory, meant for a
worker thread (a 100,000-request batch takes about a second; the event loop goes on).

Anthropic (``POST /v1/messages/batches``): ``{"requests": [{"custom_id", "params"}, ...]}``;
every ``params`` is estimated as a ``/v1/messages`` body. An element that is not
``{custom_id, params: {...}}``, bad JSON, or more than ``max_requests`` requests make the
whole batch malformed (400), as for the upstream.

OpenAI (a ``purpose=batch`` file): one ``{"custom_id", "method": "POST", "url", "body"}`` per
line; ``url`` names the endpoint the line's body is estimated as (chat completions,
responses, completions, embeddings). A line that is not valid JSON, longer than
``MAX_LINE``, or for an endpoint this proxy does not meter is counted in ``unmetered``: a
batch over such a file is refused, since what it would spend is not known.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .batches import BatchSummary, BatchTally, Prompt
from .jsonstream import JSONStreamError, LineSplitter, iter_object_array
from .legacy import parse_legacy_object
from .request import parse_object
from .routes import (
    ANTHROPIC_MESSAGES,
    LEGACY_APIS,
    OPENAI_CHAT,
    OPENAI_COMPLETIONS,
    OPENAI_EMBEDDINGS,
    OPENAI_RESPONSES,
    strip_path,
)

__all__ = ["BatchParse", "FileEstimator", "anthropic_batch_with_max_output",
           "parse_anthropic_batch"]

MAX_LINE = 32 * 1024 * 1024
LINE_APIS = {"/v1/chat/completions": OPENAI_CHAT, "/v1/responses": OPENAI_RESPONSES,
             "/v1/completions": OPENAI_COMPLETIONS, "/v1/embeddings": OPENAI_EMBEDDINGS}


@dataclass(slots=True)
class BatchParse:
    """A parsed batch: its summary, a sample of its prompts and what went wrong."""

    summary: BatchSummary | None
    sample: list[Prompt] = field(default_factory=list)
    sampled: bool = False  # the sample is a part of the prompts (else it holds all)
    error: str | None = None  # the batch as a whole is malformed
    unmetered: int = 0  # OpenAI file lines this proxy cannot estimate
    endpoints: tuple[str, ...] = ()  # OpenAI file: the line urls seen
    ident: str | None = None  # OpenAI batch: the input file id
    unmetered_reason: str | None = None  # the batch cannot be metered: why
    signals: dict[str, Any] = field(default_factory=dict)  # prompt signals seen at upload

    def to_json(self) -> dict[str, Any]:
        return {"summary": None if self.summary is None else self.summary.to_json(),
                "error": self.error, "unmetered": self.unmetered,
                "endpoints": list(self.endpoints)}


def _estimate(api: str, params: dict[str, Any]) -> Any:
    return parse_legacy_object(api, params) if api in LEGACY_APIS else parse_object(api, params)


PAUSE_EVERY = 16


def parse_anthropic_batch(body: bytes | memoryview, *, max_requests: int = 100_000,
                          sample: int = 32, pause: Callable[[], object] | None = None
                          ) -> BatchParse:
    """Estimate every request of a Message Batches body (see the module doc). ``pause`` is
    called every PAUSE_EVERY requests (a worker thread passes ``time.sleep(0)``: the event
    loop's thread then gets the GIL at once instead of after a switch interval)."""
    tally = BatchTally(sample)
    try:
        for i, item in enumerate(iter_object_array(body, "requests")):
            if pause is not None and i % PAUSE_EVERY == 0:
                pause()
            if i >= max_requests:
                return BatchParse(None, error=f"a batch may hold at most {max_requests} "
                                  "requests through this proxy")
            params = item.get("params") if isinstance(item, dict) else None
            if not isinstance(params, dict) or not isinstance(item.get("custom_id"), str):
                return BatchParse(None, error=f"requests[{i}] is not "
                                  "{custom_id: string, params: object}")
            why = tally.add(parse_object(ANTHROPIC_MESSAGES, params))
            if why is not None:
                return BatchParse(None, error=why)
    except JSONStreamError as e:
        return BatchParse(None, error=str(e))
    if tally.requests == 0:
        return BatchParse(None, error="the batch holds no requests")
    return BatchParse(tally.summary(), tally.sample, tally.sampled)


class FileEstimator:
    """Estimates an OpenAI batch input file fed in chunks (see the module doc). ``feed`` the
    file's bytes, then ``result()``."""

    def __init__(self, *, sample: int = 32, max_line: int = MAX_LINE,
                 pause: Callable[[], object] | None = None) -> None:
        self.tally = BatchTally(sample)
        self.pause = pause  # called every PAUSE_EVERY lines (see parse_anthropic_batch)
        self._n = 0
        self.lines = LineSplitter(max_line)
        self.unmetered = 0
        self.endpoints: set[str] = set()
        self.error: str | None = None
        self._first = True

    def feed(self, chunk: bytes) -> None:
        if self._first and chunk:
            self._first = False
            if chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
        for line in self.lines.feed(chunk):
            self.line(line)

    def line(self, line: bytes) -> None:
        if not line.strip():
            return
        self._n += 1
        if self.pause is not None and self._n % PAUSE_EVERY == 0:
            self.pause()
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            self.unmetered += 1
            return
        url = obj.get("url") if isinstance(obj, dict) else None
        body = obj.get("body") if isinstance(obj, dict) else None
        api = LINE_APIS.get(strip_path(url)) if isinstance(url, str) else None
        if api is None or not isinstance(body, dict) or str(obj.get("method", "")
                                                            ).upper() != "POST":
            self.unmetered += 1
            return
        self.endpoints.add(strip_path(url))
        if self.error is None:
            self.error = self.tally.add(_estimate(api, body))

    def result(self) -> BatchParse:
        self.feed(b"")
        unmetered = self.unmetered + self.lines.skipped
        if self.error is not None:
            return BatchParse(None, error=self.error, unmetered=unmetered)
        summary = self.tally.summary() if self.tally.requests else None
        return BatchParse(summary, self.tally.sample, self.tally.sampled, None, unmetered,
                          tuple(sorted(self.endpoints)))


def anthropic_batch_with_max_output(body: bytes | memoryview, cap: int) -> bytes | None:
    """A Message Batches body with every request's ``max_tokens`` lowered to ``cap`` (None
    when the body does not parse). One request at a time; the new body is written as it
    goes."""
    out = [b'{"requests":[']
    try:
        for i, item in enumerate(iter_object_array(body, "requests")):
            params = item.get("params") if isinstance(item, dict) else None
            if isinstance(params, dict):
                cur = params.get("max_tokens")
                if not isinstance(cur, int) or isinstance(cur, bool) or cur > cap:
                    params["max_tokens"] = cap
            out.append((b"," if i else b"") + json.dumps(
                item, separators=(",", ":"), ensure_ascii=False).encode())
    except JSONStreamError:
        return None
    out.append(b"]}")
    return b"".join(out)
