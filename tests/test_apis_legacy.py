"""The older spending endpoints (completions, complete, embeddings) and the output
multipliers (chat n, completions n / best_of / prompt lists, Responses background)."""

from __future__ import annotations

import json

import pytest

from hydraguard.apis import parse_request, usage_from_json
from hydraguard.apis.legacy import LegacyMeter, parse_legacy, usage_estimate
from hydraguard.apis.usage import Usage
from hydraguard_dev.upstream.legacy_format import complete_events, completion_events


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_completions_reserve_every_output_of_every_prompt() -> None:
    p = parse_legacy("openai.completions", j({
        "model": "gpt-3.5-turbo-instruct", "prompt": ["abcdefgh", "ijkl"], "n": 3,
        "best_of": 5, "max_tokens": 40, "suffix": "xyzw"}))
    assert (p.model, p.max_output, p.input_tokens_est, p.choices, p.samples, p.error) == (
        "gpt-3.5-turbo-instruct", 40, 4, 10, 5, None)  # 16 chars; 2 prompts x best_of 5
    assert p.last_user_text == "ijkl"


def test_completions_defaults_and_token_prompts() -> None:
    p = parse_legacy("openai.completions", j({"model": "m", "prompt": [1, 2, 3, 4, 5]}))
    assert (p.max_output, p.input_tokens_est, p.choices) == (16, 5, 1)  # the API's default
    p = parse_legacy("openai.completions", j({"model": "m", "prompt": [[1, 2], [3, 4, 5]],
                                              "max_tokens": 9, "n": 2}))
    assert (p.input_tokens_est, p.choices, p.samples) == (5, 4, 2)
    p = parse_legacy("openai.completions", j({"model": "m", "prompt": "x", "n": 0}))
    assert p.error == "n and best_of must be positive integers"


def test_complete_and_embeddings() -> None:
    p = parse_legacy("anthropic.complete", j({
        "model": "claude-2.1", "prompt": "\n\nHuman: tell me a story\n\nAssistant:",
        "max_tokens_to_sample": 300, "stream": True}))
    assert (p.max_output, p.stream, p.last_user_text, p.choices) == (
        300, True, "tell me a story", 1)
    assert p.input_tokens_est == 9  # 36 characters
    p = parse_legacy("openai.embeddings", j({"model": "e", "input": ["hello world", "abcd"],
                                             "stream": True}))
    assert (p.max_output, p.input_tokens_est, p.choices, p.stream) == (0, 4, 1, False)
    assert parse_legacy("openai.embeddings", j({"model": "e"})).error == "input missing"
    assert parse_legacy("anthropic.complete", j({"model": "c"})).error == "prompt missing"
    assert parse_request("openai.completions", b"{").error == "body is not valid JSON"


def test_chat_n_and_responses_background() -> None:
    p = parse_request("openai.chat", j({"model": "m", "n": 128, "max_tokens": 10,
                                        "messages": [{"role": "user", "content": "hi"}]}))
    assert (p.choices, p.samples, p.error) == (128, 128, None)
    p = parse_request("openai.chat", j({"model": "m", "n": "2", "messages": []}))
    assert (p.choices, p.error) == (1, "n is not a positive integer")
    p = parse_request("openai.responses", j({"model": "m", "input": "hi", "background": True,
                                             "max_output_tokens": 9000}))
    assert (p.deferred, p.choices, p.max_output) == (True, 1, 9000)
    assert not parse_request("anthropic.messages", j({"model": "m", "max_tokens": 5,
                                                      "messages": []})).deferred


def test_usage_of_legacy_json_replies() -> None:
    body = j({"choices": [{"text": "x"}], "usage": {"prompt_tokens": 7,
                                                    "completion_tokens": 30}})
    assert usage_from_json("openai.completions", body) == Usage(7, 30)
    assert usage_from_json("openai.embeddings", j({"usage": {"prompt_tokens": 12,
                                                            "total_tokens": 12}})) == Usage(12)
    body = j({"type": "completion", "completion": "a" * 41, "stop_reason": "stop_sequence"})
    assert usage_from_json("anthropic.complete", body) is None  # the API reports none
    assert usage_estimate("anthropic.complete", body, 9) == Usage(9, 11)  # ceil(41 / 4)
    assert usage_estimate("openai.completions", body, 9) is None


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_completions_stream_meter(size: int) -> None:
    events = b"".join(completion_events("m", 5, 6, 2, True, False, "c1", 0))
    m = LegacyMeter("openai.completions", 5)
    out = b"".join(m.feed(events[i:i + size]) for i in range(0, len(events), size))
    m.feed(b"")
    assert out == events  # forwarded unchanged
    assert (m.usage_reported, m.usage, m.completed) == (True, Usage(5, 12), True)
    no_usage = b"".join(completion_events("m", 5, 6, 1, False, False, "c1", 0))
    m = LegacyMeter("openai.completions", 5)
    m.feed(no_usage)
    m.feed(b"")
    assert (m.usage_reported, m.usage) == (False, Usage(5, 6))  # "tok" + 5 x " tok" = 23 chars


def test_complete_stream_meter_estimates_from_the_text() -> None:
    events = b"".join(complete_events("claude-2.1", 8, True, "c1"))
    m = LegacyMeter("anthropic.complete", 3)
    for i in range(0, len(events), 5):
        assert m.feed(events[i:i + 5]) == events[i:i + 5]
    m.feed(b"")
    assert (m.usage_reported, m.usage, m.completed) == (False, Usage(3, 8), True)  # 31 chars
    cut = LegacyMeter("anthropic.complete", 3)
    cut.feed(events[: len(events) // 2])
    assert not cut.completed and cut.usage.output_tokens > 0
