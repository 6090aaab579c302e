"""Deterministic content of the stand-in upstream: token counts, text deltas, SSE framing."""

from __future__ import annotations

import json
from typing import Any

DEFAULT_OUTPUT_TOKENS = 64
TEXT_KEYS = frozenset({"system", "instructions", "content", "text", "input", "prompt"})
MESSAGES, CHAT, RESPONSES = "/v1/messages", "/v1/chat/completions", "/v1/responses"
COUNT_TOKENS = "/v1/messages/count_tokens"
MODELS = ("stub-model", "claude-stub", "gpt-stub")


def _chars(v: Any, counted: bool = False) -> int:
    if isinstance(v, str):
        return len(v) if counted else 0
    if isinstance(v, dict):
        return sum(_chars(x, k in TEXT_KEYS) for k, x in v.items())
    if isinstance(v, list):
        return sum(_chars(x, counted) for x in v)
    return 0


def input_tokens_for(body: Any) -> int:
    """The stub's input token count for a request body (see ``hydraguard_dev.upstream``)."""
    try:
        return max(1, _chars(body) // 4)
    except RecursionError:
        return 1


def as_count(v: Any) -> int | None:
    """A non-negative count from an int or a digit string (a header value); else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return max(v, 0)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    return None


def output_tokens_for(body: Any, header: str | None) -> tuple[int, bool]:
    """``(output tokens, truncated by the request's cap)``."""
    wanted = as_count(header)
    wanted = DEFAULT_OUTPUT_TOKENS if wanted is None else wanted
    cap = None
    if isinstance(body, dict):
        for f in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            c = as_count(body.get(f))
            if c is not None:
                cap = c if cap is None else min(cap, c)
    if cap is not None and cap < wanted:
        return cap, True
    return wanted, False


def text_deltas(n: int) -> list[str]:
    """The ``n`` text deltas of a reply: ``["tok", " tok", ...]``."""
    return ["tok" if i == 0 else " tok" for i in range(n)]


def sse(event: str | None, data: Any) -> bytes:
    """One SSE event; ``data`` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
