"""OpenAI replies of the stand-in upstream: Chat Completions, Responses, error bodies."""

from __future__ import annotations

from typing import Any

from .content import sse, text_deltas

_ERROR_TYPES = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", None), 404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}

# Chat Completions ----------------------------------------------------------------------------


def chat_usage(n_in: int, n_out: int) -> dict[str, Any]:
    """The ``usage`` object of a chat completion."""
    return {
        "prompt_tokens": n_in,
        "completion_tokens": n_out,
        "total_tokens": n_in + n_out,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    model: str, n_in: int, n_out: int, truncated: bool = False,
    cid: str = "chatcmpl-stub", created: int = 0,
) -> dict[str, Any]:
    """A non-streamed chat completion."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant", "content": "".join(text_deltas(n_out)), "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "length" if truncated else "stop",
        }],
        "usage": chat_usage(n_in, n_out),
        "system_fingerprint": "fp_stub",
    }


def chat_events(
    model: str, n_in: int, n_out: int, include_usage: bool, truncated: bool = False,
    cid: str = "chatcmpl-stub", created: int = 0,
) -> list[bytes]:
    """SSE events of a streamed chat completion (usage chunk only if ``include_usage``)."""

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        c: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_stub",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return sse(None, c)

    ev = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    ev += [chunk({"content": t}, None) for t in text_deltas(n_out)]
    ev.append(chunk({}, "length" if truncated else "stop"))
    if include_usage:
        ev.append(sse(None, {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_stub", "choices": [], "usage": chat_usage(n_in, n_out),
        }))
    ev.append(b"data: [DONE]\n\n")
    return ev


# Responses -----------------------------------------------------------------------------------


def responses_usage(n_in: int, n_out: int) -> dict[str, Any]:
    """The ``usage`` object of a Responses reply."""
    return {
        "input_tokens": n_in,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": n_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": n_in + n_out,
    }


def _output_item(n_out: int, item_id: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id, "type": "message", "status": status, "role": "assistant",
        "content": [{
            "type": "output_text", "text": "".join(text_deltas(n_out)),
            "annotations": [], "logprobs": [],
        }],
    }


def response_object(
    model: str, n_in: int, n_out: int, truncated: bool = False,
    rid: str = "resp_stub", created: int = 0,
) -> dict[str, Any]:
    """A finished Responses object (status ``incomplete`` when cut by max_output_tokens)."""
    return {
        "id": rid, "object": "response", "created_at": created,
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "error": None, "instructions": None, "metadata": {}, "model": model,
        "output": [_output_item(n_out, "msg_" + rid)],
        "parallel_tool_calls": True, "temperature": 1.0, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "text": {"format": {"type": "text"}}, "truncation": "disabled",
        "usage": responses_usage(n_in, n_out),
    }


def responses_events(
    model: str, n_in: int, n_out: int, truncated: bool = False,
    rid: str = "resp_stub", created: int = 0,
) -> list[bytes]:
    """SSE events of a streamed Responses reply, ending in response.completed/incomplete."""
    final = response_object(model, n_in, n_out, truncated, rid, created)
    early = {**final, "status": "in_progress", "incomplete_details": None, "output": [],
             "usage": None}
    item_id = "msg_" + rid
    item = final["output"][0]
    part = item["content"][0]
    seq = iter(range(1 << 30))

    def ev(etype: str, **fields: Any) -> bytes:
        return sse(etype, {"type": etype, "sequence_number": next(seq), **fields})

    loc = {"item_id": item_id, "output_index": 0, "content_index": 0}
    out = [
        ev("response.created", response=early),
        ev("response.in_progress", response=early),
        ev("response.output_item.added", output_index=0,
           item={**item, "status": "in_progress", "content": []}),
        ev("response.content_part.added", **loc, part={**part, "text": ""}),
    ]
    out += [ev("response.output_text.delta", **loc, delta=t, logprobs=[])
            for t in text_deltas(n_out)]
    out += [
        ev("response.output_text.done", **loc, text=part["text"], logprobs=[]),
        ev("response.content_part.done", **loc, part=part),
        ev("response.output_item.done", output_index=0, item=item),
        ev("response.incomplete" if truncated else "response.completed", response=final),
    ]
    return out


# Errors --------------------------------------------------------------------------------------


def openai_error(status: int, message: str) -> dict[str, Any]:
    """An OpenAI-format error body for ``status``."""
    etype, code = _ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}
