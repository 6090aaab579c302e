"""Replies of the stand-in upstream for the older spending endpoints: OpenAI completions and
embeddings, Anthropic Text Completions (``/v1/complete``, which reports no usage)."""

from __future__ import annotations

from typing import Any

from .content import as_count, sse, text_deltas
from .openai_format import chat_usage

EMBEDDING_DIMS = 8


def prompts_of(body: dict[str, Any]) -> int:
    """How many prompts a completions body holds (a list of strings or token lists: each)."""
    p = body.get("prompt")
    if isinstance(p, list) and p and not all(isinstance(x, int) for x in p):
        return len(p)
    return 1


def choices_of(body: dict[str, Any]) -> int:
    """Completions returned per prompt: ``n`` (``best_of`` are generated, ``n`` returned)."""
    return as_count(body.get("n")) or 1


def completion(model: str, n_in: int, n_out: int, choices: int, truncated: bool, cid: str,
               created: int) -> dict[str, Any]:
    """A non-streamed completions reply: ``choices`` choices of ``n_out`` tokens each."""
    text = "".join(text_deltas(n_out))
    return {
        "id": cid, "object": "text_completion", "created": created, "model": model,
        "choices": [{"text": text, "index": i, "logprobs": None,
                     "finish_reason": "length" if truncated else "stop"}
                    for i in range(choices)],
        "usage": chat_usage(n_in, n_out * choices),
    }


def completion_events(model: str, n_in: int, n_out: int, choices: int, include_usage: bool,
                      truncated: bool, cid: str, created: int) -> list[bytes]:
    """SSE chunks of a streamed completions reply (usage chunk only if ``include_usage``)."""
    def chunk(i: int, text: str, finish: str | None) -> bytes:
        return sse(None, {"id": cid, "object": "text_completion", "created": created,
                          "model": model, "choices": [{"text": text, "index": i,
                                                       "logprobs": None,
                                                       "finish_reason": finish}]})

    ev = []
    for i in range(choices):
        ev += [chunk(i, t, None) for t in text_deltas(n_out)]
        ev.append(chunk(i, "", "length" if truncated else "stop"))
    if include_usage:
        ev.append(sse(None, {"id": cid, "object": "text_completion", "created": created,
                             "model": model, "choices": [],
                             "usage": chat_usage(n_in, n_out * choices)}))
    ev.append(b"data: [DONE]\n\n")
    return ev


def embeddings(model: str, n_in: int, inputs: int) -> dict[str, Any]:
    """An embeddings reply: one small vector per input."""
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i,
                      "embedding": [0.125] * EMBEDDING_DIMS} for i in range(inputs)],
            "usage": {"prompt_tokens": n_in, "total_tokens": n_in}}


def complete(model: str, n_out: int, truncated: bool, cid: str) -> dict[str, Any]:
    """A Text Completions reply (no usage: the legacy API reports none)."""
    return {"type": "completion", "id": cid, "completion": "".join(text_deltas(n_out)),
            "stop_reason": "max_tokens" if truncated else "stop_sequence", "model": model,
            "stop": None, "log_id": cid}


def complete_events(model: str, n_out: int, truncated: bool, cid: str) -> list[bytes]:
    """SSE events of a streamed Text Completions reply."""
    ev = [sse("completion", {"type": "completion", "id": cid, "completion": t,
                             "stop_reason": None, "model": model}) for t in text_deltas(n_out)]
    ev.append(sse("completion", {"type": "completion", "id": cid, "completion": "",
                                 "stop_reason": "max_tokens" if truncated else "stop_sequence",
                                 "model": model}))
    return ev
