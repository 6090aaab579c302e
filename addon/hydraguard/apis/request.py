"""Request side of the model APIs: parsing, token estimates and body rewrites (routing:
routes.py; the legacy completions and embeddings endpoints: legacy.py).

Token estimate heuristic (``ParsedRequest.input_tokens_est``): every piece of text the model
will read (system prompt / instructions, all message text, tool-call arguments, tool results and
tool definitions serialised as compact JSON) is summed as ASCII characters and non-ASCII
characters; the estimate is ``ceil(ascii_chars / 4) + non_ascii_chars`` (CJK text is about one
token per character, so a chars/4 rule would undercount it 4x), plus ``IMAGE_TOKENS`` per image
and ``FILE_TOKENS`` per file/document block that is not plain text. No per-message overhead.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from .routes import (  # noqa: F401  (re-exported: the routing used to live here)
    ANTHROPIC_COMPLETE,
    ANTHROPIC_MESSAGES,
    APIS,
    LEGACY_APIS,
    OPENAI_CHAT,
    OPENAI_COMPLETIONS,
    OPENAI_RESPONSES,
    api_for_path,
    provider_for_request,
    provider_of,
)

IMAGE_TOKENS = 1600
"""Fixed estimate for one image (Anthropic caps a ~1.15 MP image at about 1600 tokens)."""
FILE_TOKENS = 1600
"""Fixed estimate for one non-text document / file block."""
TEXT_CAP = 16 * 1024
"""``system_text`` and ``last_user_text`` are cut to this many characters."""


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What hydraguard needs to know about a model request body."""

    api: str
    model: str | None
    stream: bool
    max_output: int | None
    input_tokens_est: int
    system_text: str
    last_user_text: str
    """Text of the last user turn that has text (a turn of only tool results is skipped)."""
    include_usage: bool
    error: str | None
    choices: int = 1
    """Outputs the request asks for, each up to ``max_output`` (chat ``n``; completions
    ``max(n, best_of)`` per prompt): the reservation is ``choices`` times the output cap."""
    samples: int = 1
    """Outputs per prompt (``n``, ``best_of``): what ``settings.max_choices`` limits."""
    deferred: bool = False
    """The response will carry no usage (Responses ``background: true``): nothing settles
    the reservation, so it reserves the whole output cap."""


def _load(body: bytes) -> tuple[Any, str | None]:
    try:
        obj = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return None, "body is not valid JSON"
    if not isinstance(obj, dict):
        return None, "body is not a JSON object"
    return obj, None


def _nonneg_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


class _Counter:
    """Accumulates characters and media blocks for the token estimate."""

    __slots__ = ("ascii", "files", "images", "other")

    def __init__(self) -> None:
        self.ascii = self.other = self.images = self.files = 0

    def text(self, s: Any) -> None:
        if not isinstance(s, str) or not s:
            return
        if s.isascii():
            self.ascii += len(s)
        else:
            a = len(s.encode("ascii", "ignore"))
            self.ascii += a
            self.other += len(s) - a

    def json(self, v: Any) -> None:
        if v is None:
            return
        if isinstance(v, str):
            self.text(v)
            return
        with contextlib.suppress(ValueError, TypeError, RecursionError):
            self.text(json.dumps(v, separators=(",", ":"), ensure_ascii=False))

    def tokens(self) -> int:
        return -(-self.ascii // 4) + self.other + self.images * IMAGE_TOKENS + (
            self.files * FILE_TOKENS
        )


_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
_FILE_TYPES = frozenset({"document", "file", "input_file", "input_audio", "audio"})


def _content_text(content: Any, c: _Counter | None) -> str:
    """Count a content value (string or list of blocks) into ``c`` and return its plain text."""
    if isinstance(content, str):
        if c is not None:
            c.text(content)
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            if c is not None:
                c.text(block)
            continue
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        text = block.get("text")
        if isinstance(text, str):  # text, input_text, output_text, thinking-less blocks
            parts.append(text)
            if c is not None:
                c.text(text)
        if c is None:
            continue
        if btype in _IMAGE_TYPES:
            c.images += 1
        elif btype in _FILE_TYPES:
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                c.text(source.get("data"))
            elif isinstance(source, dict) and source.get("type") == "content":
                _content_text(source.get("content"), c)
            else:
                c.files += 1
        elif btype == "tool_use" or btype == "server_tool_use":
            c.text(block.get("name"))
            c.json(block.get("input"))
        elif btype == "tool_result":
            _content_text(block.get("content"), c)
        elif btype == "thinking":
            c.text(block.get("thinking"))
        elif btype == "refusal":
            c.text(block.get("refusal"))
    return "\n".join(parts)


def _cap(s: str) -> str:
    return s[:TEXT_CAP]


def _parse_anthropic(obj: dict[str, Any], c: _Counter) -> tuple[str, str, str | None]:
    error = None
    system = obj.get("system")
    system_text = _content_text(system, c)
    last_user = ""
    messages = obj.get("messages")
    if not isinstance(messages, list):
        error = "messages missing" if messages is None else "messages is not a list"
        messages = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        text = _content_text(m.get("content"), c)
        if m.get("role") == "user" and text:
            last_user = text
    c.json(obj.get("tools"))
    return system_text, last_user, error


def _parse_chat(obj: dict[str, Any], c: _Counter) -> tuple[str, str, str | None]:
    error = None
    systems: list[str] = []
    last_user = ""
    messages = obj.get("messages")
    if not isinstance(messages, list):
        error = "messages missing" if messages is None else "messages is not a list"
        messages = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        text = _content_text(m.get("content"), c)
        if role in ("system", "developer"):
            systems.append(text)
        elif role == "user" and text:
            last_user = text
        calls = m.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    c.text(fn.get("name"))
                    c.text(fn.get("arguments"))
        c.text(m.get("refusal"))
    c.json(obj.get("tools"))
    c.json(obj.get("functions"))
    return "\n".join(systems), last_user, error


def _parse_responses(obj: dict[str, Any], c: _Counter) -> tuple[str, str, str | None]:
    error = None
    systems: list[str] = []
    instructions = obj.get("instructions")
    if isinstance(instructions, str):
        c.text(instructions)
        systems.append(instructions)
    last_user = ""
    items = obj.get("input")
    if isinstance(items, str):
        c.text(items)
        last_user = items
    elif isinstance(items, list):
        for item in items:
            if not isinstance(item, dict):
                continue
            itype = item.get("type")
            role = item.get("role")
            if role is not None or itype == "message":
                text = _content_text(item.get("content"), c)
                if role in ("system", "developer"):
                    systems.append(text)
                elif role == "user" and text:
                    last_user = text
            elif itype == "function_call" or itype == "custom_tool_call":
                c.text(item.get("name"))
                c.text(item.get("arguments"))
                c.text(item.get("input"))
            elif itype in ("function_call_output", "custom_tool_call_output"):
                output = item.get("output")
                if isinstance(output, str):
                    c.text(output)
                else:
                    _content_text(output, c)
            elif itype == "reasoning":
                for s in item.get("summary") or ():
                    if isinstance(s, dict):
                        c.text(s.get("text"))
            else:
                _content_text(item.get("content"), c)
    elif items is not None:
        error = "input is not a string or list"
    c.json(obj.get("tools"))
    return "\n".join(systems), last_user, error


_PARSERS = {
    ANTHROPIC_MESSAGES: _parse_anthropic,
    OPENAI_CHAT: _parse_chat,
    OPENAI_RESPONSES: _parse_responses,
}


def _max_output(api: str, obj: dict[str, Any]) -> int | None:
    if api == ANTHROPIC_MESSAGES:
        return _nonneg_int(obj.get("max_tokens"))
    if api == OPENAI_RESPONSES:
        return _nonneg_int(obj.get("max_output_tokens"))
    a = _nonneg_int(obj.get("max_completion_tokens"))
    b = _nonneg_int(obj.get("max_tokens"))
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


def _bad(api: str, error: str) -> ParsedRequest:
    return ParsedRequest(api, None, False, None, 0, "", "", False, error)


def model_field(obj: dict, error: str | None) -> tuple[str | None, str | None]:
    """(model, error) of a request object: its ``model`` string, or None and why not (a
    missing or malformed model is the error reported; otherwise ``error`` is kept)."""
    model = obj.get("model")
    if model is None or model == "":
        return model, "model missing"
    if not isinstance(model, str):
        return None, "model is not a string"
    return model, error


def parse_request(api: str, body: bytes) -> ParsedRequest:
    """Parse a model request body; never raises, ``error`` says what is wrong with it.

    On a non-fatal problem (e.g. "model missing") the other fields are still filled in.
    """
    if api in LEGACY_APIS:
        from .legacy import parse_legacy

        return parse_legacy(api, body)
    if api not in _PARSERS:
        return _bad(str(api), "unknown api")
    obj, error = _load(body)
    if obj is None:
        return _bad(api, error or "body is not a JSON object")
    return parse_object(api, obj)


def _choices(v: Any) -> int | None:
    """A count of choices (``n``): a positive int, 1 when absent, None when invalid."""
    if v is None:
        return 1
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else None


def parse_object(api: str, obj: dict[str, Any]) -> ParsedRequest:
    """Like `parse_request`, for a body already decoded (a batch's request params)."""
    parser = _PARSERS.get(api)
    if parser is None:
        return _bad(str(api), "unknown api")
    c = _Counter()
    try:
        system_text, last_user, error = parser(obj, c)
    except RecursionError:
        return _bad(api, "body is nested too deeply")
    model, error = model_field(obj, error)
    stream = obj.get("stream") is True
    include_usage = False
    choices = 1
    if api == OPENAI_CHAT:
        opts = obj.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        n = _choices(obj.get("n"))
        if n is None:
            error, n = "n is not a positive integer", 1
        choices = n
    return ParsedRequest(
        api=api,
        model=model if isinstance(model, str) and model else None,
        stream=stream,
        max_output=_max_output(api, obj),
        input_tokens_est=c.tokens(),
        system_text=_cap(system_text),
        last_user_text=_cap(last_user),
        include_usage=include_usage,
        error=error,
        choices=choices,
        samples=choices,
        deferred=api == OPENAI_RESPONSES and obj.get("background") is True,
    )


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def with_include_usage(body: bytes) -> bytes | None:
    """OpenAI chat stream request lacking ``stream_options.include_usage``: the body with it set.

    None when the body is not a streaming chat request, already asks for usage, or is unparseable.
    """
    obj, _ = _load(body)
    if obj is None or obj.get("stream") is not True:
        return None
    opts = obj.get("stream_options")
    if opts is None:
        opts = {}
    if not isinstance(opts, dict) or opts.get("include_usage") is True:
        return None
    obj["stream_options"] = {**opts, "include_usage": True}
    return _dump(obj)


_CAP_FIELDS = {
    ANTHROPIC_MESSAGES: ("max_tokens",),
    OPENAI_RESPONSES: ("max_output_tokens",),
    OPENAI_CHAT: ("max_completion_tokens", "max_tokens"),
    OPENAI_COMPLETIONS: ("max_tokens",),
    ANTHROPIC_COMPLETE: ("max_tokens_to_sample",),
}


def with_max_output(api: str, body: bytes, cap: int) -> bytes | None:
    """Body with the output cap field(s) lowered to ``min(current, cap)``; added if absent.

    Chat: rewrites whichever of ``max_completion_tokens`` / ``max_tokens`` is present (both if
    both), else adds ``max_completion_tokens``. Returns None when nothing needs to change, the
    body is unparseable, the api is unknown or ``cap`` is not a positive int.
    """
    fields = _CAP_FIELDS.get(api)
    if fields is None or not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        return None
    obj, _ = _load(body)
    if obj is None:
        return None
    present = [f for f in fields if obj.get(f) is not None]
    changed = False
    for f in present or fields[:1]:
        cur = obj.get(f)
        if not isinstance(cur, int) or isinstance(cur, bool) or cur > cap:
            obj[f] = cap
            changed = True
    return _dump(obj) if changed else None
