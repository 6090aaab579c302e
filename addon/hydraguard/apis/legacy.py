"""The older spending endpoints, metered like chat: OpenAI ``/v1/completions`` and
``/v1/embeddings``, Anthropic ``/v1/complete`` (Text Completions).

- completions: ``prompt`` is a string, a list of strings, a token list or a list of token
  lists (every prompt gets its own ``max(n, best_of)`` completions: ``best_of`` are generated
  and billed even when fewer are returned); ``max_tokens`` defaults to 16 as in the API.
  Token lists count one token per entry.
- complete: ``prompt`` (the ``\\n\\nHuman: ... \\n\\nAssistant:`` transcript) and
  ``max_tokens_to_sample``. Its responses carry no usage: the output is estimated from the
  text (``ceil(chars / 4)``, as for a cut stream) and logged as ``json_estimate`` /
  ``stream_estimate``.
- embeddings: ``input`` like completions' prompt; input only (``max_output`` 0).

`LegacyMeter` meters the SSE streams of completions (``data:`` chunks with ``choices[].text``,
the usage chunk when the client asked for ``include_usage``, ``[DONE]``) and of complete
(``event: completion`` with ``completion`` text), forwarding every chunk unchanged.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .request import ParsedRequest, _bad, _Counter, _load, _nonneg_int, model_field
from .routes import ANTHROPIC_COMPLETE, OPENAI_COMPLETIONS, OPENAI_EMBEDDINGS
from .sse import StreamMeter, make_stream_meter
from .usage import Usage, chat_usage, count_of, usage_from_json

__all__ = ["LegacyMeter", "json_usage", "parse_legacy", "parse_legacy_object", "stream_meter",
           "usage_estimate"]

COMPLETIONS_DEFAULT_MAX_TOKENS = 16
MAX_LINE = 8 * 1024 * 1024
TEXT_CAP = 16 * 1024


def _prompts(v: Any, c: _Counter) -> tuple[int, int, str, str | None]:
    """(prompts, token-list tokens, last prompt text, error) of a prompt / input value."""
    if v is None:
        return 1, 0, "", None
    if isinstance(v, str):
        c.text(v)
        return 1, 0, v, None
    if not isinstance(v, list):
        return 1, 0, "", "prompt is not a string or list"
    if not v:
        return 0, 0, "", None
    if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return 1, len(v), "", None
    n = tokens = 0
    last = ""
    for x in v:
        n += 1
        if isinstance(x, str):
            c.text(x)
            last = x
        elif isinstance(x, list):
            tokens += len(x)
        else:
            return n, tokens, last, "prompt list holds something other than text or tokens"
    return n, tokens, last, None


def _positive(obj: dict[str, Any], name: str) -> int | None:
    v = obj.get(name)
    if v is None:
        return 1
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else None


def _last_human(prompt: str) -> str:
    """The last Human turn of a Text Completions transcript."""
    i = prompt.rfind("Human:")
    text = prompt[i + 6:] if i >= 0 else prompt
    j = text.find("\n\nAssistant:")
    return (text[:j] if j >= 0 else text).strip()


def parse_legacy(api: str, body: bytes) -> ParsedRequest:
    """Parse a completions / complete / embeddings body (never raises)."""
    obj, error = _load(body)
    if obj is None:
        return _bad(api, error or "body is not a JSON object")
    return parse_legacy_object(api, obj)


def parse_legacy_object(api: str, obj: dict[str, Any]) -> ParsedRequest:
    """Like `parse_legacy`, for a body already decoded (a line of a batch input file)."""
    c = _Counter()
    try:
        if api == ANTHROPIC_COMPLETE:
            prompt = obj.get("prompt")
            prompts, tokens, last, error = _prompts(prompt, c)
            if not isinstance(prompt, str):
                error = "prompt missing" if prompt is None else "prompt is not a string"
            last = _last_human(last)
            max_output = _nonneg_int(obj.get("max_tokens_to_sample"))
            samples = 1
        elif api == OPENAI_COMPLETIONS:
            prompts, tokens, last, error = _prompts(obj.get("prompt"), c)
            c.text(obj.get("suffix"))
            raw = obj.get("max_tokens")
            max_output = COMPLETIONS_DEFAULT_MAX_TOKENS if raw is None else _nonneg_int(raw)
            n, best_of = _positive(obj, "n"), _positive(obj, "best_of")
            if n is None or best_of is None:
                error, n, best_of = "n and best_of must be positive integers", n or 1, \
                    best_of or 1
            samples = max(n, best_of)
        elif api == OPENAI_EMBEDDINGS:
            inp = obj.get("input")
            prompts, tokens, last, error = _prompts(inp, c)
            if inp is None:
                error = "input missing"
            max_output, samples, prompts = 0, 1, 1
        else:
            return _bad(str(api), "unknown api")
    except RecursionError:
        return _bad(api, "body is nested too deeply")
    model, error = model_field(obj, error)
    include_usage = False
    if api == OPENAI_COMPLETIONS:
        opts = obj.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    return ParsedRequest(
        api=api, model=model if isinstance(model, str) and model else None,
        stream=obj.get("stream") is True and api != OPENAI_EMBEDDINGS,
        max_output=max_output, input_tokens_est=c.tokens() + tokens, system_text="",
        last_user_text=last[:TEXT_CAP], include_usage=include_usage, error=error,
        choices=max(1, prompts) * samples, samples=samples,
    )


def _estimate_out(chars: int) -> int:
    return math.ceil(chars / 4)


def usage_estimate(api: str, body: bytes, input_tokens_est: int) -> Usage | None:
    """Usage of a Text Completions JSON response, which reports none: the input estimate and
    the output estimated from the completion text. None for other APIs or a body that is not
    a completion."""
    if api != ANTHROPIC_COMPLETE:
        return None
    try:
        obj = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return None
    text = obj.get("completion") if isinstance(obj, dict) else None
    if not isinstance(text, str):
        return None
    return Usage(count_of(input_tokens_est) or 0, _estimate_out(len(text)))


def json_usage(api: str, body: bytes, input_tokens_est: int
               ) -> tuple[Usage | None, str | None]:
    """(usage, usage_source) of a JSON model response: reported (``json``), else estimated
    for an API that reports none (``json_estimate``), else (None, None)."""
    usage = usage_from_json(api, body)
    if usage is not None:
        return usage, "json"
    usage = usage_estimate(api, body, input_tokens_est)
    return usage, "json_estimate" if usage is not None else None


def stream_meter(api: str, hide_usage_chunk: bool, input_tokens_est: int
                 ) -> StreamMeter | LegacyMeter:
    """The meter of a streamed model response: `LegacyMeter` for completions and complete,
    else `sse.StreamMeter`."""
    if api in (OPENAI_COMPLETIONS, ANTHROPIC_COMPLETE):
        return LegacyMeter(api, input_tokens_est)
    return make_stream_meter(api, hide_usage_chunk, input_tokens_est=input_tokens_est)


class LegacyMeter:
    """Meters one streamed completions / complete response (see the module doc). Same
    reading interface as `sse.StreamMeter`: ``feed``, ``usage``, ``usage_reported``,
    ``completed``, ``error``."""

    __slots__ = ("_buf", "_chars", "_event", "_input_est", "_reported", "_skip", "api",
                 "completed", "error")

    def __init__(self, api: str, input_tokens_est: int = 0) -> None:
        self.api = api
        self.completed = False
        self.error: str | None = None
        self._input_est = count_of(input_tokens_est) or 0
        self._buf = b""
        self._skip = False
        self._event = ""
        self._chars = 0
        self._reported: Usage | None = None

    @property
    def usage_reported(self) -> bool:
        return self._reported is not None

    @property
    def usage(self) -> Usage:
        if self._reported is not None:
            return self._reported
        return Usage(self._input_est, _estimate_out(self._chars))

    def feed(self, chunk: bytes) -> bytes:
        """Meter a chunk (``b""`` at the end); the chunk is forwarded unchanged."""
        try:
            self._parse(bytes(chunk))
        except Exception as e:  # metering must never break the stream
            self.error = self.error or f"meter failure: {type(e).__name__}"
        return chunk

    def _parse(self, chunk: bytes) -> None:
        if not chunk:
            if self._buf and not self._skip:
                self._line(self._buf)
            self._buf = b""
            return
        data = self._buf + chunk if self._buf else chunk
        lines = data.split(b"\n")
        rest = lines.pop()
        for i, line in enumerate(lines):
            if i == 0 and self._skip:
                self._skip = False
                continue
            self._line(line.rstrip(b"\r"))
        self._buf = rest
        if len(rest) > MAX_LINE:
            self._buf, self._skip = b"", True

    def _line(self, line: bytes) -> None:
        if line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")
            return
        if not line.startswith(b"data:"):
            if not line:
                self._event = ""
            return
        data = line[5:].strip()
        if data == b"[DONE]":
            self.completed = True
            return
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(obj, dict):
            return
        if self.api == ANTHROPIC_COMPLETE:
            self._complete(obj)
        else:
            self._completions(obj)

    def _complete(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type") or self._event
        if kind == "completion":
            text = obj.get("completion")
            if isinstance(text, str):
                self._chars += len(text)
            if obj.get("stop_reason"):
                self.completed = True
        elif kind == "error":
            err = obj.get("error")
            self.error = str(err.get("message") if isinstance(err, dict) else err)

    def _completions(self, obj: dict[str, Any]) -> None:
        if obj.get("error") is not None:
            err = obj["error"]
            self.error = str(err.get("message") if isinstance(err, dict) else err)
            return
        u = obj.get("usage")
        if isinstance(u, dict):
            self._reported = chat_usage(u)
        for ch in obj.get("choices") or ():
            text = ch.get("text") if isinstance(ch, dict) else None
            if isinstance(text, str):
                self._chars += len(text)
