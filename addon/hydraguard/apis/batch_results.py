"""What the upstream says about batches after they were submitted: batch objects (status,
request counts, output file, results URL) and the results themselves (JSONL, read as they
stream to the client, never buffered).

- `batch_states(body)`: the batches in a batch object or a list of them, each as a
  `BatchState`: whether it has ended, how many of its requests succeeded (the others spent
  nothing), its OpenAI output file.
- `rewrite_results_urls(body, base)`: Anthropic's ``results_url`` points at the upstream;
  the SDKs fetch it as given (``client.messages.batches.results``), so it is rewritten to go
  through the proxy (``base``: ``settings.public_base_url``, or "" for a path-only URL, which
  the SDKs resolve against their ``base_url``).
- `ResultsMeter`: a stream callable that tallies the usage of every result line (Anthropic
  ``result.message.usage``, OpenAI ``response.body.usage``) per model, and counts the lines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .jsonstream import LineSplitter
from .usage import Usage, _tail_usage, anthropic_usage, chat_usage, count_of, responses_usage

__all__ = ["BatchState", "ResultsMeter", "batch_states", "rewrite_results_urls"]

MAX_LINE = 64 * 1024 * 1024
MAX_MODELS = 64
HEAD = 4096  # longer lines are read by their head (type, status, model) and usage tail
_TYPE = re.compile(rb'"type"\s*:\s*"([a-z_]{1,32})"')
_STATUS = re.compile(rb'"status_code"\s*:\s*(\d{1,3})')
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_ANTHROPIC_ENDED = frozenset({"ended"})
_OPENAI_ENDED = frozenset({"completed", "cancelled", "expired", "failed"})
_RESULTS_PATH = re.compile(r"^(?:[a-z][a-z0-9+.-]*://[^/]*)?(/v1/messages/batches/"
                           r"[A-Za-z0-9_-]{1,128}/results)(\?[^#]*)?$")


@dataclass(frozen=True, slots=True)
class BatchState:
    """One batch as the upstream describes it."""

    id: str
    provider: str
    ended: bool  # its request counts are final
    succeeded: int | None  # requests that spent tokens (None: not said)
    output_file_id: str | None = None


def _one(obj: Any) -> BatchState | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        return None
    counts = obj.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}
    if obj.get("type") == "message_batch":
        return BatchState(obj["id"], "anthropic", obj.get("processing_status") in
                          _ANTHROPIC_ENDED, count_of(counts.get("succeeded")))
    if obj.get("object") == "batch":
        out = obj.get("output_file_id")
        status = obj.get("status")
        done = count_of(counts.get("completed"))
        if status == "failed":
            done = 0  # failed validation: nothing ran
        return BatchState(obj["id"], "openai", status in _OPENAI_ENDED, done,
                          out if isinstance(out, str) and out else None)
    return None


def batch_states(body: bytes) -> list[BatchState]:
    """The batches a batch object (or a list of them) describes; [] when it is neither."""
    try:
        obj = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return []
    items = obj.get("data") if isinstance(obj, dict) and isinstance(obj.get("data"), list) \
        else [obj]
    return [s for s in map(_one, items) if s is not None]


def rewrite_results_urls(body: bytes, base: str) -> bytes | None:
    """The body with every Anthropic ``results_url`` sent through ``base`` (see the module
    doc); None when nothing changes."""
    try:
        obj = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return None
    items = obj.get("data") if isinstance(obj, dict) and isinstance(obj.get("data"), list) \
        else [obj]
    changed = False
    for it in items:
        url = it.get("results_url") if isinstance(it, dict) else None
        m = _RESULTS_PATH.match(url) if isinstance(url, str) else None
        if m is not None:
            new = base.rstrip("/") + m.group(1) + (m.group(2) or "")
            if new != url:
                it["results_url"] = new
                changed = True
    return json.dumps(obj, ensure_ascii=False).encode() if changed else None


@dataclass(slots=True)
class _Sum:
    inp: int = 0
    out: int = 0
    cache_creation: int = 0
    cache_read: int = 0

    def add(self, u: Usage) -> None:
        self.inp += u.input_tokens
        self.out += u.output_tokens
        self.cache_creation += u.cache_creation_input_tokens
        self.cache_read += u.cache_read_input_tokens

    def usage(self) -> Usage:
        return Usage(self.inp, self.out, self.cache_creation, self.cache_read)


@dataclass(slots=True)
class ResultsMeter:
    """Tallies the result lines of one batch (see the module doc). ``feed`` is the response's
    stream callable: every chunk is forwarded as it came."""

    provider: str
    lines: int = 0
    succeeded: int = 0
    unreadable: int = 0  # lines whose usage could not be read (no exact settle then)
    ended: bool = False  # the whole body went through
    by_model: dict[str | None, _Sum] = field(default_factory=dict)
    _split: LineSplitter = field(default_factory=lambda: LineSplitter(MAX_LINE))

    def feed(self, chunk: bytes) -> bytes:
        try:
            for line in self._split.feed(bytes(chunk)):
                if line.strip():
                    self._line(line)
            if not chunk:
                self.ended = True
                self.unreadable += self._split.skipped
        except Exception:  # metering never breaks the stream
            self.unreadable += 1
        return chunk

    def usage(self) -> dict[str | None, Usage]:
        """Usage per model the results name."""
        return {m: s.usage() for m, s in self.by_model.items()}

    def _line(self, line: bytes) -> None:
        self.lines += 1
        if len(line) > HEAD:
            got = self._fast(line)
        else:
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                self.unreadable += 1
                return
            if not isinstance(obj, dict):
                self.unreadable += 1
                return
            got = self._anthropic(obj) if self.provider == "anthropic" else self._openai(obj)
        if got is None:
            return  # a request that spent nothing
        model, u = got
        if u is None:
            self.unreadable += 1
            return
        self.succeeded += 1
        s = self.by_model.get(model)
        if s is None:
            if len(self.by_model) >= MAX_MODELS:
                self.unreadable += 1
                return
            s = self.by_model[model] = _Sum()
        s.add(u)

    def _fast(self, line: bytes) -> tuple[str | None, Usage | None] | None:
        """A long line (a long answer): its kind and model from the head, its usage from
        the tail (every API writes ``usage`` after the content; a key cannot occur
        unescaped inside a string), without decoding the content."""
        head = line[:HEAD]
        if self.provider == "anthropic":
            m = _TYPE.search(head)
            if m is None or m.group(1) != b"succeeded":
                return None if m is not None else (None, None)
        else:
            m = _STATUS.search(head)
            if m is None:
                return None, None
            if int(m.group(1)) >= 400:
                return None
        mm = _MODEL.search(head)
        model = mm.group(1).decode("utf-8", "replace") if mm else None
        u = _tail_usage(line)
        if u is None:
            return model, None
        if self.provider == "anthropic":
            return model, anthropic_usage(u)
        return model, (chat_usage if "prompt_tokens" in u else responses_usage)(u)

    @staticmethod
    def _anthropic(obj: dict[str, Any]) -> tuple[str | None, Usage | None] | None:
        res = obj.get("result")
        if not isinstance(res, dict) or res.get("type") != "succeeded":
            return None  # errored, canceled, expired: not billed
        msg = res.get("message")
        u = msg.get("usage") if isinstance(msg, dict) else None
        model = msg.get("model") if isinstance(msg, dict) else None
        return (model if isinstance(model, str) else None,
                anthropic_usage(u) if isinstance(u, dict) else None)

    @staticmethod
    def _openai(obj: dict[str, Any]) -> tuple[str | None, Usage | None] | None:
        resp = obj.get("response")
        if not isinstance(resp, dict):
            return None
        status = resp.get("status_code")
        if not isinstance(status, int) or status >= 400:
            return None
        body = resp.get("body")
        u = body.get("usage") if isinstance(body, dict) else None
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(u, dict):
            return (model if isinstance(model, str) else None), None
        reader = chat_usage if "prompt_tokens" in u else responses_usage
        return (model if isinstance(model, str) else None), reader(u)
