"""Token usage as reported by the providers, normalised to one shape.

OpenAI counts cached prompt tokens inside ``prompt_tokens`` / ``input_tokens``; they are moved
to ``cache_read_input_tokens`` so that ``total_input`` equals the provider's prompt total for
both providers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .routes import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_COMPLETIONS,
    OPENAI_EMBEDDINGS,
    OPENAI_RESPONSES,
)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response; ``input_tokens`` excludes cache reads and writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def total_input(self) -> int:
        """All input tokens: uncached + cache creation + cache read."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    @property
    def total(self) -> int:
        """All input and output tokens."""
        return self.total_input + self.output_tokens


def count_of(v: Any) -> int | None:
    """A token count from JSON: a non-negative int (or finite float), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, float) and math.isfinite(v) and v >= 0:
        return int(v)
    return None


def _n(v: Any) -> int:
    return count_of(v) or 0


def anthropic_usage(u: dict[str, Any]) -> Usage:
    """Usage from an Anthropic ``usage`` object."""
    return Usage(
        _n(u.get("input_tokens")),
        _n(u.get("output_tokens")),
        _n(u.get("cache_creation_input_tokens")),
        _n(u.get("cache_read_input_tokens")),
    )


def _cached(details: Any) -> int:
    return _n(details.get("cached_tokens")) if isinstance(details, dict) else 0


def chat_usage(u: dict[str, Any]) -> Usage:
    """Usage from an OpenAI chat ``usage`` object (prompt/completion tokens)."""
    prompt = _n(u.get("prompt_tokens"))
    cached = min(_cached(u.get("prompt_tokens_details")), prompt)
    return Usage(prompt - cached, _n(u.get("completion_tokens")), 0, cached)


def responses_usage(u: dict[str, Any]) -> Usage:
    """Usage from an OpenAI Responses ``usage`` object (input/output tokens)."""
    inp = _n(u.get("input_tokens"))
    cached = min(_cached(u.get("input_tokens_details")), inp)
    return Usage(inp - cached, _n(u.get("output_tokens")), 0, cached)


USAGE_READERS = {
    ANTHROPIC_MESSAGES: anthropic_usage,
    OPENAI_CHAT: chat_usage,
    OPENAI_RESPONSES: responses_usage,
    OPENAI_COMPLETIONS: chat_usage,  # prompt_tokens / completion_tokens, as chat
    OPENAI_EMBEDDINGS: chat_usage,  # prompt_tokens only
}


_DECODER = json.JSONDecoder()


def _tail_usage(body: bytes) -> dict[str, Any] | None:
    """The object after the last `"usage":` key. All three APIs write `usage` after the
    content, and quotes inside content strings are escaped, so the last unescaped key is the
    top-level one; callers fall back to a full parse when this finds nothing usable."""
    i = body.rfind(b'"usage"')
    if i < 0:
        return None
    j = body.find(b"{", i + 7, i + 32)
    if j < 0 or body[i + 7 : j].strip() != b":":  # e.g. "usage": null
        return None
    try:
        obj, _ = _DECODER.raw_decode(body[j:].decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def usage_from_json(api: str, body: bytes) -> Usage | None:
    """Usage of a non-streamed JSON response body; None if absent or unparseable."""
    reader = USAGE_READERS.get(api)
    if reader is None:
        return None
    fast = _tail_usage(body)  # parsing the whole body costs ~3 µs per KB of output text
    if fast is not None:
        got = reader(fast)
        if got is not None:
            return got
    try:
        obj = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    u = obj.get("usage")
    if not isinstance(u, dict) and api == OPENAI_RESPONSES:
        resp = obj.get("response")  # a lone response.completed event body
        u = resp.get("usage") if isinstance(resp, dict) else None
    return reader(u) if isinstance(u, dict) else None
