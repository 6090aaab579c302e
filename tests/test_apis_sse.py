"""StreamMeter: usage from SSE streams split anywhere, cut streams, errors, hidden usage chunk."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydraguard.apis import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    StreamMeter,
    Usage,
    make_stream_meter,
)
from hydraguard.apis import sse as sse_mod
from hydraguard_dev.upstream import anthropic_events, chat_events, responses_events, sse

A_EVENTS = anthropic_events("claude-x", 100, 20)
C_EVENTS = chat_events("gpt-x", 100, 20, include_usage=True)
C_PLAIN = chat_events("gpt-x", 100, 20, include_usage=False)
R_EVENTS = responses_events("gpt-x", 100, 20)
A_BODY, C_BODY, R_BODY = b"".join(A_EVENTS), b"".join(C_EVENTS), b"".join(R_EVENTS)
CRLF = {k: v.replace(b"\n", b"\r\n") for k, v in
        {"a": A_BODY, "c": C_BODY, "r": R_BODY}.items()}
USAGE_CHUNK = C_EVENTS[-2]
HIDDEN_BODY = b"".join(e for e in C_EVENTS if e is not USAGE_CHUNK)


def run(meter: StreamMeter, *chunks: bytes) -> bytes:
    out = b"".join(meter.feed(c) for c in chunks)
    return out + meter.feed(b"")


def state(m: StreamMeter) -> tuple[Usage, bool, bool, str | None]:
    return m.usage, m.usage_reported, m.completed, m.error


def test_fixture_streams_look_right() -> None:
    # two message_deltas: cumulative 10 then 20; a naive sum would give 30 (+1 placeholder)
    deltas = [json.loads(e.split(b"data: ")[1]) for e in A_EVENTS if b"message_delta" in e[:30]]
    assert [d["usage"]["output_tokens"] for d in deltas] == [10, 20]
    assert json.loads(USAGE_CHUNK[6:])["choices"] == []
    assert b'"usage"' not in b"".join(C_PLAIN)


@pytest.mark.parametrize(
    ("api", "body", "usage"),
    [
        (ANTHROPIC_MESSAGES, A_BODY, Usage(100, 20)),
        (OPENAI_CHAT, C_BODY, Usage(100, 20)),
        (OPENAI_RESPONSES, R_BODY, Usage(100, 20)),
        (ANTHROPIC_MESSAGES, CRLF["a"], Usage(100, 20)),
        (OPENAI_CHAT, CRLF["c"], Usage(100, 20)),
        (OPENAI_RESPONSES, CRLF["r"], Usage(100, 20)),
    ],
)
def test_every_byte_split(api: str, body: bytes, usage: Usage) -> None:
    for i in range(len(body) + 1):
        m = make_stream_meter(api)
        assert run(m, body[:i], body[i:]) == body
        assert state(m) == (usage, True, True, None), i


@pytest.mark.parametrize("body", [C_BODY, CRLF["c"]])
def test_hide_usage_chunk_every_byte_split(body: bytes) -> None:
    expected = HIDDEN_BODY if body == C_BODY else HIDDEN_BODY.replace(b"\n", b"\r\n")
    assert len(expected) == len(body) - len(USAGE_CHUNK) - (body != C_BODY) * 2
    for i in range(len(body) + 1):
        m = make_stream_meter(OPENAI_CHAT, hide_usage_chunk=True)
        assert run(m, body[:i], body[i:]) == expected, i
        assert state(m) == (Usage(100, 20), True, True, None)


def test_hide_usage_chunk_byte_by_byte() -> None:
    m = make_stream_meter(OPENAI_CHAT, hide_usage_chunk=True)
    out = run(m, *(C_BODY[i : i + 1] for i in range(len(C_BODY))))
    assert out == HIDDEN_BODY
    assert m.usage == Usage(100, 20)


def test_hide_usage_chunk_forwards_complete_lines_at_once() -> None:
    m = make_stream_meter(OPENAI_CHAT, hide_usage_chunk=True)
    first = C_EVENTS[0]
    assert m.feed(first + b"data: {\"id\"") == first  # the partial line is held back
    assert m.feed(b"") == b""  # a torn last line is never forwarded (SSE clients drop it)
    assert m.feed(b': "x"}\n\n') == b'data: {"id": "x"}\n\n'  # an empty chunk loses nothing


def test_hide_only_applies_to_chat() -> None:
    m = make_stream_meter(ANTHROPIC_MESSAGES, hide_usage_chunk=True)
    assert run(m, A_BODY) == A_BODY


def test_hide_keeps_chunks_that_have_choices_and_usage() -> None:
    body = sse(None, {"choices": [{"index": 0, "delta": {"content": "x"}}],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1}}) + b"data: [DONE]\n\n"
    m = make_stream_meter(OPENAI_CHAT, hide_usage_chunk=True)
    assert run(m, body) == body
    assert m.usage == Usage(1, 1)


def test_hide_long_line_is_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse_mod, "HOLD_MAX", 10)
    m = make_stream_meter(OPENAI_CHAT, hide_usage_chunk=True)
    line = C_EVENTS[1]
    assert m.feed(line[:30]) == line[:30]
    assert m.feed(line[30:40]) == line[30:40]
    assert m.feed(line[40:] + USAGE_CHUNK) == line[40:]
    assert m.feed(b"") == b""
    assert m.usage == Usage(100, 20)


def test_non_hide_returns_chunks_unchanged_immediately() -> None:
    m = make_stream_meter(OPENAI_CHAT)
    assert m.feed(b"data: {\"choi") == b"data: {\"choi"
    assert m.feed(b"") == b""


def test_anthropic_cumulative_not_double_counted() -> None:
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    run(m, A_BODY)
    assert m.usage.output_tokens == 20
    assert m.usage == Usage(100, 20)


def test_anthropic_message_delta_keeps_start_cache_fields() -> None:
    start = {"type": "message_start", "message": {"usage": {
        "input_tokens": 5, "output_tokens": 1, "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 2000}}}
    body = (
        sse("message_start", start)
        + sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 7}})
        + sse("message_delta", {"type": "message_delta",
                                "usage": {"output_tokens": 9, "cache_read_input_tokens": 1500}})
        + sse("message_stop", {"type": "message_stop"})
    )
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    run(m, body)
    assert state(m) == (Usage(5, 9, 10, 1500), True, True, None)
    assert m.usage.total_input == 1515


def test_anthropic_cut_before_usage_estimates_from_text() -> None:
    # message_start, content_block_start, ping and 5 deltas: "tok" + 4 * " tok" = 19 chars
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    run(m, b"".join(A_EVENTS[:8]))
    assert state(m) == (Usage(100, 5), False, False, None)


def test_anthropic_cut_mid_event() -> None:
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    body = b"".join(A_EVENTS[:8]) + A_EVENTS[8][:25]
    run(m, body)
    assert state(m) == (Usage(100, 5), False, False, None)


def test_anthropic_cut_before_anything() -> None:
    m = make_stream_meter(ANTHROPIC_MESSAGES, input_tokens_est=42)
    run(m, b"event: message_st")
    assert state(m) == (Usage(42, 0), False, False, None)


def test_anthropic_cut_after_first_message_delta() -> None:
    idx = next(i for i, e in enumerate(A_EVENTS) if e.startswith(b"event: message_delta"))
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    run(m, b"".join(A_EVENTS[: idx + 1]))
    assert state(m) == (Usage(100, 10), True, False, None)


def test_anthropic_placeholder_is_a_floor() -> None:
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 4}}}
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    run(m, sse("message_start", start))
    assert m.usage == Usage(3, 4)


def test_chat_cut_uses_input_estimate() -> None:
    m = make_stream_meter(OPENAI_CHAT, input_tokens_est=77)
    run(m, b"".join(C_EVENTS[:6]))  # role chunk + 5 content chunks = 19 chars
    assert state(m) == (Usage(77, 5), False, False, None)


def test_chat_without_usage_chunk_is_estimated_but_completed() -> None:
    m = make_stream_meter(OPENAI_CHAT, input_tokens_est=9)
    run(m, b"".join(C_PLAIN))
    # 20 deltas: 3 + 19 * 4 = 79 chars -> 20 tokens
    assert state(m) == (Usage(9, 20), False, True, None)


def test_chat_counts_tool_call_arguments() -> None:
    delta = {"tool_calls": [{"index": 0, "function": {"name": "lookup", "arguments": "{\"q\":"}}]}
    body = sse(None, {"choices": [{"index": 0, "delta": delta}]})
    m = make_stream_meter(OPENAI_CHAT)
    run(m, body)
    assert m.usage == Usage(0, 3)  # 6 + 5 = 11 chars


def test_responses_cut_and_incomplete() -> None:
    m = make_stream_meter(OPENAI_RESPONSES, input_tokens_est=50)
    run(m, b"".join(R_EVENTS[:9]))  # created, in_progress, item, part, 5 deltas
    assert state(m) == (Usage(50, 5), False, False, None)
    m = make_stream_meter(OPENAI_RESPONSES)
    run(m, b"".join(responses_events("m", 30, 4, truncated=True)))
    assert state(m) == (Usage(30, 4), True, True, None)


def test_anthropic_error_event() -> None:
    err = sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                  "message": "Overloaded"}})
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    run(m, b"".join(A_EVENTS[:8]) + err)
    assert state(m) == (Usage(100, 5), False, False, "overloaded_error: Overloaded")


def test_chat_error_chunk() -> None:
    err = sse(None, {"error": {"message": "boom", "type": "server_error", "code": None}})
    m = make_stream_meter(OPENAI_CHAT)
    run(m, b"".join(C_EVENTS[:3]) + err)
    assert (m.error, m.completed) == ("server_error: boom", False)


def test_responses_error_and_failed() -> None:
    m = make_stream_meter(OPENAI_RESPONSES)
    run(m, R_EVENTS[0] + sse("error", {"type": "error", "code": "server_error",
                                       "message": "bad", "sequence_number": 1}))
    assert (m.error, m.completed) == ("server_error: bad", False)
    failed = {"type": "response.failed", "response": {
        "status": "failed", "error": {"code": "server_error", "message": "it broke"},
        "usage": {"input_tokens": 8, "output_tokens": 2}}}
    m = make_stream_meter(OPENAI_RESPONSES)
    run(m, R_EVENTS[0] + sse("response.failed", failed))
    assert state(m) == (Usage(8, 2), True, False, "server_error: it broke")


def test_comments_ids_and_multiline_data() -> None:
    body = (
        b": keep-alive\n\nid: 1\nretry: 100\nevent: message_start\n"
        b'data: {"type": "message_start",\ndata: "message": {"usage": {"input_tokens": 6}}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    assert run(m, body) == body
    assert state(m) == (Usage(6, 0), False, True, None)


def test_last_event_without_blank_line_is_read_but_a_torn_line_is_not() -> None:
    m = make_stream_meter(OPENAI_CHAT)
    run(m, C_BODY[:-1])
    assert (m.usage, m.completed) == (Usage(100, 20), True)
    m = make_stream_meter(OPENAI_CHAT)
    run(m, C_BODY[:-2])
    assert (m.usage, m.completed) == (Usage(100, 20), False)


def test_oversized_line_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse_mod, "MAX_LINE", 300)
    big = sse("content_block_delta", {"type": "content_block_delta",
                                      "delta": {"type": "text_delta", "text": "x" * 500}})
    body = b"".join(A_EVENTS[:3]) + big + b"".join(A_EVENTS[3:])
    for step in (7, 64, 1000):
        m = make_stream_meter(ANTHROPIC_MESSAGES)
        assert run(m, *(body[i : i + step] for i in range(0, len(body), step))) == body
        assert state(m) == (Usage(100, 20), True, True, None)


@pytest.mark.parametrize("junk", [b"\x00\xff" * 50, b"data: {]\n\n", b"data: 12\n\n",
                                  b"event: error\ndata: []\n\n", b"\n\n\n", b"data: [DONE]\n\n"])
def test_junk_does_not_raise(junk: bytes) -> None:
    for api in (ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES, "unknown"):
        for hide in (False, True):
            m = make_stream_meter(api, hide)
            out = run(m, junk)
            assert out == junk if not hide or api != OPENAI_CHAT else junk.startswith(out)
            assert m.usage.output_tokens == 0


def test_feed_accepts_bytearray_and_memoryview() -> None:
    m = make_stream_meter(OPENAI_CHAT)
    assert m.feed(bytearray(C_BODY[:10])) == C_BODY[:10]
    assert m.feed(memoryview(C_BODY[10:])) == C_BODY[10:]
    assert m.feed(None) == b""  # type: ignore[arg-type]
    m.feed(b"")
    assert m.usage == Usage(100, 20)


def _splits(body: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(body)), max_size=12).map(sorted)


def _pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_splits(data: st.DataObject) -> None:
    api, body, hide, expected = data.draw(st.sampled_from([
        (ANTHROPIC_MESSAGES, A_BODY, False, A_BODY),
        (ANTHROPIC_MESSAGES, CRLF["a"], False, CRLF["a"]),
        (OPENAI_CHAT, C_BODY, False, C_BODY),
        (OPENAI_CHAT, C_BODY, True, HIDDEN_BODY),
        (OPENAI_CHAT, CRLF["c"], True, HIDDEN_BODY.replace(b"\n", b"\r\n")),
        (OPENAI_RESPONSES, R_BODY, False, R_BODY),
        (OPENAI_RESPONSES, CRLF["r"], True, CRLF["r"]),
    ]))
    cuts = data.draw(_splits(body))
    m = make_stream_meter(api, hide)
    assert run(m, *_pieces(body, cuts)) == expected
    assert state(m) == (Usage(100, 20), True, True, None)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(A_BODY)), st.lists(st.integers(0, len(A_BODY)), max_size=6))
def test_random_cut_never_overcounts(cut: int, splits: list[int]) -> None:
    body = A_BODY[:cut]
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    run(m, *_pieces(body, sorted(s for s in splits if s <= cut)))
    assert m.usage.output_tokens <= 20
    assert m.usage.input_tokens in (0, 100)
    assert m.completed == (cut >= len(A_BODY) - 1)  # the last blank line is optional
