"""Anthropic Messages replies of the stand-in upstream: message, SSE events, error bodies."""

from __future__ import annotations

from typing import Any

from .content import sse, text_deltas

_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}


def anthropic_usage(n_in: int, n_out: int) -> dict[str, Any]:
    """The ``usage`` object of a Messages reply."""
    return {
        "input_tokens": n_in,
        "output_tokens": n_out,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def anthropic_message(
    model: str, n_in: int, n_out: int, truncated: bool = False, msg_id: str = "msg_stub"
) -> dict[str, Any]:
    """A non-streamed Messages reply."""
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(text_deltas(n_out))}],
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(n_in, n_out),
    }


def anthropic_events(
    model: str, n_in: int, n_out: int, truncated: bool = False, msg_id: str = "msg_stub"
) -> list[bytes]:
    """SSE events of a streamed Messages reply; two cumulative message_deltas if n_out > 8."""
    start = anthropic_message(model, n_in, 1, truncated, msg_id)
    start.update(content=[], stop_reason=None)
    ev = [
        sse("message_start", {"type": "message_start", "message": start}),
        sse("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""},
        }),
        sse("ping", {"type": "ping"}),
    ]
    ev += [
        sse("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": t},
        })
        for t in text_deltas(n_out)
    ]
    ev.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if n_out > 8:
        ev.append(sse("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": None, "stop_sequence": None},
            "usage": {"output_tokens": n_out // 2},
        }))
    ev.append(sse("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens" if truncated else "end_turn", "stop_sequence": None},
        "usage": anthropic_usage(n_in, n_out),
    }))
    ev.append(sse("message_stop", {"type": "message_stop"}))
    return ev


def anthropic_error(status: int, message: str, request_id: str) -> dict[str, Any]:
    """An Anthropic-format error body for ``status``."""
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    etype = _ERROR_TYPES.get(status, fallback)
    return {"type": "error", "error": {"type": etype, "message": message},
            "request_id": request_id}
