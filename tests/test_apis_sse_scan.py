"""The SSE meter's fast paths (content events measured unparsed, whole-event chunks) give the
same usage, completion and error as parsing every event in full, line by line."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydraguard.apis import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    _scan,
    make_stream_meter,
)
from hydraguard.apis import sse as sse_mod
from hydraguard_dev.upstream import anthropic_events, chat_events, responses_events, sse


def _full_parse(monkeypatch: pytest.MonkeyPatch, api: str, body: bytes, hide: bool = False):
    """The reference: no scanner, one byte at a time (the general line parser)."""
    with monkeypatch.context() as m:
        m.setattr(_scan, "SCANNERS", {})
        m.setattr(_scan, "EVENTS", {})
        m.setattr(_scan, "PLAIN_EVENTS", {})
        meter = make_stream_meter(api, hide)
        out = b"".join(meter.feed(body[i : i + 1]) for i in range(len(body)))
        out += meter.feed(b"")
        return out, meter.usage, meter.usage_reported, meter.completed, meter.error


def _fast(api: str, events: list[bytes], hide: bool = False):
    meter = make_stream_meter(api, hide)
    out = b"".join(meter.feed(e) for e in events) + meter.feed(b"")
    return out, meter.usage, meter.usage_reported, meter.completed, meter.error


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "tok", ' "quoted" ', "back\\slash", "tab\there", "line\nbreak", "é", "日本語", "😀",
     "\u2028", "\x00", "}}", '","text":"x'])


def _dumps(obj: object, ascii_only: bool) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii_only)


@st.composite
def anthropic_stream(draw: st.DrawFn) -> list[bytes]:
    ascii_only = draw(st.booleans())
    events = [sse("message_start", {"type": "message_start", "message": {
        "usage": {"input_tokens": 7, "output_tokens": 1}}})]
    for i, (field, text) in enumerate(draw(st.lists(st.tuples(
            st.sampled_from(["text", "partial_json", "thinking", "signature", "citation"]),
            TEXT), max_size=8))):
        kind = {"text": "text_delta", "partial_json": "input_json_delta",
                "thinking": "thinking_delta"}.get(field, field + "_delta")
        payload = _dumps({"type": "content_block_delta", "index": i,
                          "delta": {"type": kind, field: text}}, ascii_only)
        if draw(st.integers(0, 9)) == 0:  # a broken escape: the full parse drops the event
            payload = payload.replace('":"', '":"\\q', 1)
        events.append(f"event: content_block_delta\ndata: {payload}\n\n".encode())
        if draw(st.booleans()):
            events.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
        if draw(st.integers(0, 5)) == 0:
            events.append(sse("ping", {"type": "ping"}))
    if draw(st.booleans()):
        events.append(sse("message_delta", {"type": "message_delta", "usage": {
            "output_tokens": draw(st.integers(0, 50))}}))
        events.append(sse("message_stop", {"type": "message_stop"}))
    return events


@st.composite
def chat_stream(draw: st.DrawFn) -> list[bytes]:
    ascii_only = draw(st.booleans())
    events = []
    for text in draw(st.lists(TEXT, max_size=8)):
        delta: dict = {"content": text}
        extra = draw(st.integers(0, 6))
        if extra == 0:
            delta["role"] = "assistant"
        elif extra == 1:
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}
        elif extra == 2:
            delta["refusal"] = None
        elif extra == 3:
            delta = {"content": None}
        chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
            "usage": None}
        if draw(st.integers(0, 4)) == 0:
            chunk["choices"].append({"index": 1, "delta": {"content": text + "!"}})
        events.append(f"data: {_dumps(chunk, ascii_only)}\n\n".encode())
    if draw(st.booleans()):
        events.append(sse(None, {"id": "c", "choices": [], "usage": {
            "prompt_tokens": 5, "completion_tokens": draw(st.integers(0, 50))}}))
        events.append(b"data: [DONE]\n\n")
    return events


@st.composite
def responses_stream(draw: st.DrawFn) -> list[bytes]:
    ascii_only = draw(st.booleans())
    events = [sse("response.created", {"type": "response.created", "response": {"usage": None}})]
    for i, text in enumerate(draw(st.lists(TEXT, max_size=8))):
        etype = draw(st.sampled_from(["response.output_text.delta",
                                      "response.function_call_arguments.delta",
                                      "response.output_text.done"]))
        obj = {"type": etype, "item_id": "m", "output_index": 0, "delta": text,
               "sequence_number": i}
        events.append(f"event: {etype}\ndata: {_dumps(obj, ascii_only)}\n\n".encode())
    if draw(st.booleans()):
        events.append(sse("response.completed", {"type": "response.completed", "response": {
            "usage": {"input_tokens": 3, "output_tokens": draw(st.integers(0, 50))}}}))
    return events


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fast_paths_match_a_full_parse(data: st.DataObject) -> None:
    api, strategy = data.draw(st.sampled_from([
        (ANTHROPIC_MESSAGES, anthropic_stream()), (OPENAI_CHAT, chat_stream()),
        (OPENAI_RESPONSES, responses_stream())]))
    events = data.draw(strategy)
    hide = api == OPENAI_CHAT and data.draw(st.booleans())
    cut = data.draw(st.integers(0, len(events)))  # a stream cut between events
    with pytest.MonkeyPatch.context() as mp:
        assert _fast(api, events[:cut], hide) == _full_parse(mp, api, b"".join(events[:cut]),
                                                             hide)


@pytest.mark.parametrize(("api", "events"), [
    (ANTHROPIC_MESSAGES, anthropic_events("m", 100, 2000)),
    (OPENAI_CHAT, chat_events("m", 100, 2000, include_usage=True)),
    (OPENAI_RESPONSES, responses_events("m", 100, 2000)),
])
def test_long_streams_event_by_event_and_cut(monkeypatch: pytest.MonkeyPatch, api: str,
                                             events: list[bytes]) -> None:
    for cut in (len(events), len(events) // 2):  # whole, and cut before any usage
        fast = _fast(api, events[:cut])
        assert fast == _full_parse(monkeypatch, api, b"".join(events[:cut]))
    # cut mid-way: charged for the text delivered ("tok" + " tok" * k), as the full parse
    usage, reported = _fast(api, events[: len(events) // 2])[1:3]
    assert not reported and 990 <= usage.output_tokens <= 1002


def test_content_events_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []
    real = sse_mod.json.loads
    monkeypatch.setattr(sse_mod.json, "loads", lambda d, *a, **k: parsed.append(d) or real(d))
    _fast(ANTHROPIC_MESSAGES, anthropic_events("m", 100, 50))
    # message_start, content_block_start, two message_deltas, message_stop
    assert len(parsed) == 5
    parsed.clear()
    _fast(OPENAI_CHAT, chat_events("m", 100, 50, include_usage=True))
    assert len(parsed) == 2  # the role chunk (it has "refusal") and the usage chunk
    parsed.clear()
    _fast(OPENAI_RESPONSES, responses_events("m", 100, 50))
    assert len(parsed) == 1  # response.completed


@pytest.mark.parametrize(("raw", "n"), [
    (b"tok", 3), (b"", 0), (b"\\u00e9t\\u00e9", 3), ("été".encode(), 3), (b"\\ud83d\\ude00", 1),
    ("😀".encode(), 1), (b'say \\"hi\\"', 8), (b"\\q", 0), (b"\xff", 0), (b"\\u12", 0),
    (None, 0),
])
def test_text_len(raw: bytes | None, n: int) -> None:
    assert _scan.text_len(raw) == n


@pytest.mark.parametrize(("api", "events", "first", "last"), [
    (ANTHROPIC_MESSAGES, anthropic_events("m", 1, 5), 3, 8),
    (OPENAI_CHAT, chat_events("m", 1, 5, include_usage=False), 1, 6),
    (OPENAI_RESPONSES, responses_events("m", 1, 5), 4, 9),
])
def test_the_providers_content_events_take_one_match(api: str, events: list[bytes], first: int,
                                                     last: int) -> None:
    content = events[first:last]
    assert all(_scan.EVENTS[api].fullmatch(e) for e in content)
    assert not any(_scan.EVENTS[api].fullmatch(e) for e in events[:first])
