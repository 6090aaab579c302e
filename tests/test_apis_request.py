"""Request side of hydraguard.apis: routing, parse_request, body rewrites."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydraguard.apis import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    api_for_path,
    parse_request,
    provider_for_request,
    provider_of,
    with_include_usage,
    with_max_output,
)
from hydraguard.apis.request import FILE_TOKENS, IMAGE_TOKENS, TEXT_CAP


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("method", "path", "api"),
    [
        ("POST", "/v1/messages", ANTHROPIC_MESSAGES),
        ("post", "/v1/messages/", ANTHROPIC_MESSAGES),
        ("POST", "/v1/messages?beta=true", ANTHROPIC_MESSAGES),
        ("POST", "/v1/chat/completions", OPENAI_CHAT),
        ("POST", "/v1/chat/completions/?x=1", OPENAI_CHAT),
        ("POST", "/v1/responses", OPENAI_RESPONSES),
        ("POST", "/v1/messages/count_tokens", None),
        ("GET", "/v1/models", None),
        ("GET", "/v1/messages", None),
        ("POST", "/v1/responses/resp_1/cancel", None),
        ("POST", "/v2/messages", None),
        ("POST", "", None),
        ("POST", "/", None),
    ],
)
def test_api_for_path(method: str, path: str, api: str | None) -> None:
    assert api_for_path(method, path) == api


def test_api_for_path_bad_types() -> None:
    assert api_for_path(None, "/v1/messages") is None  # type: ignore[arg-type]
    assert api_for_path("POST", None) is None  # type: ignore[arg-type]


def test_provider_of() -> None:
    assert provider_of(ANTHROPIC_MESSAGES) == "anthropic"
    assert provider_of(OPENAI_CHAT) == "openai"
    assert provider_of(OPENAI_RESPONSES) == "openai"
    assert provider_of(None) == "openai"


@pytest.mark.parametrize(
    ("path", "headers", "provider"),
    [
        ("/v1/messages/count_tokens", {}, "anthropic"),
        ("/v1/messages/batches", {"authorization": "Bearer x"}, "anthropic"),
        ("/v1/models", {"X-Api-Key": "k"}, "anthropic"),
        ("/v1/models", {"anthropic-version": "2023-06-01"}, "anthropic"),
        ("/v1/models", {"authorization": "Bearer x"}, "openai"),
        ("/v1/embeddings", {"x-api-key": "k"}, "openai"),
        ("/v1/files", {}, "openai"),
    ],
)
def test_provider_for_request(path: str, headers: dict[str, str], provider: str) -> None:
    assert provider_for_request(path, headers) == provider


# -- Anthropic --------------------------------------------------------------------------------

TOOLS_A = [{"name": "calc", "input_schema": {"type": "object"}}]  # 50 chars as compact JSON


def test_parse_anthropic_full() -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 100,
        "stream": True,
        "system": [{"type": "text", "text": "S" * 40}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "a" * 100},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "A" * 10000}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "b" * 12},
                {"type": "tool_use", "id": "t1", "name": "calc", "input": {"x": 1}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "42"},
            ]},
        ],
        "tools": TOOLS_A,
    }
    p = parse_request(ANTHROPIC_MESSAGES, j(body))
    # ascii chars: 40 system + 100 user + 12 assistant + 4 "calc" + 7 '{"x":1}' + 2 + 50 tools
    assert p.input_tokens_est == -(-215 // 4) + IMAGE_TOKENS == 54 + 1600
    assert p.error is None
    assert p.model == "claude-x"
    assert p.stream is True
    assert p.max_output == 100
    assert p.system_text == "S" * 40
    assert p.last_user_text == "a" * 100  # the tool-result-only turn is skipped
    assert p.include_usage is False
    assert p.api == ANTHROPIC_MESSAGES


def test_parse_anthropic_string_content_and_documents() -> None:
    body = {
        "model": "m", "max_tokens": 5, "system": "be brief",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "data": "JVBER" * 100}},
                {"type": "document", "source": {"type": "text", "data": "x" * 20}},
                {"type": "text", "text": "second"},
            ]},
        ],
    }
    p = parse_request(ANTHROPIC_MESSAGES, j(body))
    # 8 + 5 + 2 + 20 + 6 = 41 ascii -> 11, plus one non-text document
    assert p.input_tokens_est == 11 + FILE_TOKENS
    assert p.system_text == "be brief"
    assert p.last_user_text == "second"
    assert p.stream is False


def test_parse_non_ascii_counts_one_token_per_char() -> None:
    body = {"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "你好" * 10 + "abcd"}]}
    assert parse_request(ANTHROPIC_MESSAGES, j(body)).input_tokens_est == 20 + 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{", "body is not valid JSON"),
        (b"", "body is not valid JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (b'"model"', "body is not a JSON object"),
        (b"null", "body is not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON"),
    ],
)
def test_parse_malformed(body: bytes, error: str) -> None:
    for api in (ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES):
        p = parse_request(api, body)
        assert p.error == error
        assert p.model is None
        assert p.input_tokens_est == 0


def test_parse_missing_or_bad_fields_still_fills_the_rest() -> None:
    p = parse_request(ANTHROPIC_MESSAGES, j({"max_tokens": 7, "messages": [
        {"role": "user", "content": "abcdefgh"}]}))
    assert (p.error, p.model, p.max_output, p.input_tokens_est) == ("model missing", None, 7, 2)
    p = parse_request(ANTHROPIC_MESSAGES, j({"model": 5, "messages": []}))
    assert (p.error, p.model) == ("model is not a string", None)
    p = parse_request(ANTHROPIC_MESSAGES, j({"model": "m"}))
    assert p.error == "messages missing"
    p = parse_request(OPENAI_CHAT, j({"model": "m", "messages": "hi"}))
    assert p.error == "messages is not a list"
    p = parse_request(OPENAI_RESPONSES, j({"model": "m", "input": 5}))
    assert p.error == "input is not a string or list"
    p = parse_request("nope", j({"model": "m"}))
    assert p.error == "unknown api"


def test_parse_weird_values_do_not_raise() -> None:
    body = {
        "model": "m", "max_tokens": True, "stream": "yes", "system": 12,
        "messages": [None, 3, {"role": "user", "content": [None, 5, "raw", {"type": "text"}]},
                     {"role": "user", "content": {"a": 1}}],
        "tools": {"weird": [1, 2]},
    }
    p = parse_request(ANTHROPIC_MESSAGES, j(body))
    assert p.error is None
    assert p.max_output is None
    assert p.stream is False
    assert p.last_user_text == "raw"


def test_parse_huge_input_caps_texts() -> None:
    big = "w" * 1_000_000
    body = {"model": "m", "max_tokens": 1, "system": big,
            "messages": [{"role": "user", "content": big + "!"}]}
    p = parse_request(ANTHROPIC_MESSAGES, j(body))
    assert p.input_tokens_est == -(-2_000_001 // 4) == 500_001
    assert len(p.system_text) == TEXT_CAP == 16384
    assert len(p.last_user_text) == TEXT_CAP


# -- OpenAI chat ------------------------------------------------------------------------------


def test_parse_chat_full() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]  # 61 chars
    body = {
        "model": "gpt-x",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 500,
        "max_completion_tokens": 300,
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "look at this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "f", "arguments": '{"a":1}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "result"},
        ],
        "tools": tools,
    }
    p = parse_request(OPENAI_CHAT, j(body))
    # 3 + 3 + 12 + 1 + 7 + 6 + 61 = 93 -> 24, plus one image
    assert p.input_tokens_est == 24 + IMAGE_TOKENS
    assert p.error is None
    assert p.model == "gpt-x"
    assert p.stream is True
    assert p.include_usage is True
    assert p.max_output == 300
    assert p.system_text == "sys\ndev"
    assert p.last_user_text == "look at this"


def test_parse_chat_max_tokens_only_and_no_usage() -> None:
    p = parse_request(OPENAI_CHAT, j({"model": "m", "max_tokens": 9, "stream": True,
                                      "messages": [{"role": "user", "content": "hi"}]}))
    assert (p.max_output, p.include_usage, p.input_tokens_est) == (9, False, 1)


# -- OpenAI Responses -------------------------------------------------------------------------


def test_parse_responses_full() -> None:
    body = {
        "model": "gpt-r",
        "instructions": "inst",
        "max_output_tokens": 64,
        "input": [
            {"role": "developer", "content": "dev"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "question"},
                {"type": "input_image", "image_url": "https://x/y.png"},
                {"type": "input_file", "file_id": "file_1"},
            ]},
            {"type": "function_call", "call_id": "c", "name": "fn", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "out"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "answer"}]},
        ],
    }
    p = parse_request(OPENAI_RESPONSES, j(body))
    # 4 + 3 + 8 + 2 + 2 + 3 + 6 = 28 -> 7, one image, one file
    assert p.input_tokens_est == 7 + IMAGE_TOKENS + FILE_TOKENS
    assert (p.model, p.max_output, p.stream, p.error) == ("gpt-r", 64, False, None)
    assert p.system_text == "inst\ndev"
    assert p.last_user_text == "question"


def test_parse_responses_string_input() -> None:
    p = parse_request(OPENAI_RESPONSES, j({"model": "m", "input": "x" * 9, "stream": True}))
    assert (p.input_tokens_est, p.last_user_text, p.stream) == (3, "x" * 9, True)
    assert p.max_output is None


@given(st.binary(max_size=200))
def test_parse_request_never_raises(body: bytes) -> None:
    for api in (ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES):
        assert parse_request(api, body).api == api


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["model", "messages", "content", "role", "type", "text", "input",
                         "system", "tools", "max_tokens", "stream", "source", "user"]),
        c, max_size=4),
    max_leaves=20,
)


@given(JSONISH)
def test_parse_request_random_json_never_raises(obj: object) -> None:
    for api in (ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES):
        p = parse_request(api, j(obj))
        assert p.input_tokens_est >= 0
        with_max_output(api, j(obj), 10)
    with_include_usage(j(obj))


# -- rewrites ---------------------------------------------------------------------------------


def test_with_include_usage() -> None:
    out = with_include_usage(j({"model": "m", "stream": True, "messages": []}))
    assert out is not None
    assert json.loads(out)["stream_options"] == {"include_usage": True}
    assert parse_request(OPENAI_CHAT, out).include_usage is True
    out = with_include_usage(j({"model": "m", "stream": True,
                                "stream_options": {"include_usage": False, "x": 1}}))
    assert out is not None
    assert json.loads(out)["stream_options"] == {"include_usage": True, "x": 1}
    asked = j({"stream": True, "stream_options": {"include_usage": True}})
    assert with_include_usage(asked) is None
    assert with_include_usage(j({"model": "m", "messages": []})) is None
    assert with_include_usage(j({"stream": True, "stream_options": "bad"})) is None
    assert with_include_usage(b"not json") is None
    assert with_include_usage(b"[]") is None


def test_with_include_usage_keeps_unicode() -> None:
    out = with_include_usage(j({"stream": True, "messages": [{"role": "user", "content": "é你"}]}))
    assert out is not None and "é你".encode() in out


def test_with_max_output() -> None:
    a = j({"model": "m", "max_tokens": 4096, "messages": []})
    out = with_max_output(ANTHROPIC_MESSAGES, a, 100)
    assert out is not None and json.loads(out)["max_tokens"] == 100
    assert parse_request(ANTHROPIC_MESSAGES, out).max_output == 100
    assert with_max_output(ANTHROPIC_MESSAGES, a, 4096) is None  # already within the cap
    assert with_max_output(ANTHROPIC_MESSAGES, a, 5000) is None
    out = with_max_output(ANTHROPIC_MESSAGES, j({"model": "m"}), 50)
    assert out is not None and json.loads(out)["max_tokens"] == 50  # absent: added

    both = j({"model": "m", "max_tokens": 900, "max_completion_tokens": 80})
    out = with_max_output(OPENAI_CHAT, both, 100)
    assert out is not None and json.loads(out) == {"model": "m", "max_tokens": 100,
                                                   "max_completion_tokens": 80}
    out = with_max_output(OPENAI_CHAT, j({"model": "m"}), 10)
    assert out is not None and json.loads(out) == {"model": "m", "max_completion_tokens": 10}
    out = with_max_output(OPENAI_CHAT, j({"model": "m", "max_tokens": 99}), 10)
    assert out is not None and json.loads(out) == {"model": "m", "max_tokens": 10}

    out = with_max_output(OPENAI_RESPONSES, j({"model": "m", "max_output_tokens": 300}), 30)
    assert out is not None and json.loads(out)["max_output_tokens"] == 30
    out = with_max_output(OPENAI_RESPONSES, j({"model": "m", "max_output_tokens": "300"}), 30)
    assert out is not None and json.loads(out)["max_output_tokens"] == 30

    assert with_max_output(OPENAI_CHAT, b"{", 10) is None
    assert with_max_output("nope", j({}), 10) is None
    assert with_max_output(OPENAI_CHAT, j({}), 0) is None
    assert with_max_output(OPENAI_CHAT, j({}), True) is None  # type: ignore[arg-type]
