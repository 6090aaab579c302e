"""usage_from_json for each API."""

from __future__ import annotations

import json

import pytest

from hydraguard.apis import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    Usage,
    usage_from_json,
)
from hydraguard_dev.upstream import anthropic_message, chat_completion, response_object


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_usage_totals() -> None:
    u = Usage(10, 5, 3, 2)
    assert u.total_input == 15
    assert u.total == 20
    assert Usage() == Usage(0, 0, 0, 0)


def test_anthropic_usage() -> None:
    body = {"type": "message", "usage": {"input_tokens": 12, "output_tokens": 34,
                                         "cache_creation_input_tokens": 100,
                                         "cache_read_input_tokens": 1000}}
    u = usage_from_json(ANTHROPIC_MESSAGES, j(body))
    assert u == Usage(12, 34, 100, 1000)
    assert u.total_input == 1112
    nulls = {"usage": {"input_tokens": 3, "output_tokens": 4,
                       "cache_creation_input_tokens": None, "cache_read_input_tokens": None}}
    assert usage_from_json(ANTHROPIC_MESSAGES, j(nulls)) == Usage(3, 4)


def test_chat_usage_moves_cached_tokens_to_cache_read() -> None:
    body = {"usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
                      "prompt_tokens_details": {"cached_tokens": 800}}}
    u = usage_from_json(OPENAI_CHAT, j(body))
    assert u == Usage(input_tokens=200, output_tokens=50, cache_read_input_tokens=800)
    assert u.total_input == 1000
    plain = {"usage": {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}}
    assert usage_from_json(OPENAI_CHAT, j(plain)) == Usage(7, 9)
    bogus = {"usage": {"prompt_tokens": 5, "completion_tokens": 1,
                       "prompt_tokens_details": {"cached_tokens": 50}}}
    assert usage_from_json(OPENAI_CHAT, j(bogus)) == Usage(0, 1, 0, 5)


def test_responses_usage() -> None:
    body = {"object": "response", "usage": {
        "input_tokens": 300, "input_tokens_details": {"cached_tokens": 100},
        "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 320}}
    assert usage_from_json(OPENAI_RESPONSES, j(body)) == Usage(200, 20, 0, 100)
    event = {"type": "response.completed", "response": body}
    assert usage_from_json(OPENAI_RESPONSES, j(event)) == Usage(200, 20, 0, 100)


def test_stub_bodies() -> None:
    assert usage_from_json(ANTHROPIC_MESSAGES, j(anthropic_message("m", 11, 22))) == Usage(11, 22)
    assert usage_from_json(OPENAI_CHAT, j(chat_completion("m", 11, 22))) == Usage(11, 22)
    assert usage_from_json(OPENAI_RESPONSES, j(response_object("m", 11, 22))) == Usage(11, 22)


@pytest.mark.parametrize("api", [ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES])
@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b"null", j({"id": "x"}), j({"usage": None}), j({"usage": [1]}),
     j({"type": "error", "error": {"type": "x", "message": "y"}})],
)
def test_no_usage(api: str, body: bytes) -> None:
    assert usage_from_json(api, body) is None


def test_bad_numbers_become_zero() -> None:
    body = {"usage": {"input_tokens": -5, "output_tokens": "12",
                      "cache_read_input_tokens": True, "cache_creation_input_tokens": 2.9}}
    assert usage_from_json(ANTHROPIC_MESSAGES, j(body)) == Usage(0, 0, 2, 0)
    assert usage_from_json("nope", j(body)) is None


def test_tail_fast_path_ignores_null_usage_and_nested_keys():
    from hydraguard.apis import OPENAI_CHAT, Usage, usage_from_json

    body = b'{"choices":[{"message":{"content":"say \\"usage\\": {\\"x\\":1}"}}],' \
           b'"usage":null,"meta":{"prompt_tokens":999}}'
    assert usage_from_json(OPENAI_CHAT, body) is None
    body = b'{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}'
    assert usage_from_json(OPENAI_CHAT, body) == Usage(input_tokens=7, output_tokens=3)
