"""Batch parsing pieces: the windowed JSON reader, Message Batches bodies, OpenAI batch input
files (multipart, line by line), summaries, result meters, batch objects."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydraguard.apis import parse_request
from hydraguard.apis.batch_parse import (
    FileEstimator,
    anthropic_batch_with_max_output,
    parse_anthropic_batch,
)
from hydraguard.apis.batch_results import ResultsMeter, batch_states, rewrite_results_urls
from hydraguard.apis.batches import BatchSummary, BatchTally, k_smallest, part_of
from hydraguard.apis.jsonstream import JSONStreamError, LineSplitter, iter_object_array
from hydraguard.apis.multipart import MultipartReader, boundary_of
from hydraguard.apis.usage import Usage


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def areq(i: int, model: str = "claude-x", max_tokens: int = 100, text: str = "hello there"
         ) -> dict:
    return {"custom_id": f"r{i}", "params": {
        "model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": f"{text} {i}"}]}}


# -- the windowed reader --------------------------------------------------------------------

@given(st.lists(st.dictionaries(st.text(max_size=5), st.one_of(
    st.integers(), st.floats(allow_nan=False), st.text(), st.booleans(), st.none()),
    max_size=4), max_size=12), st.integers(min_value=1, max_value=64))
def test_array_elements_come_out_as_json_would_read_them(items, window) -> None:
    body = j({"before": [1, {"x": "]"}], "requests": items, "after": "}"})
    assert list(iter_object_array(body, "requests", window=window)) == items


@pytest.mark.parametrize(("body", "error"), [
    (b'{"requests": [1, 2', "expected ',' or ']' in 'requests'"),
    (b'{"requests": [1]} x', "data after the JSON object"),
    (b'{"other": 1}', "'requests' missing"),
    (b'{"requests": [1], "requests": [2]}', "'requests' given twice"),
    (b"[1]", "expected '{', found '['"),
    (b'{"requests": [tru]}', "body is not valid JSON: Expecting value"),
    (b'{"requests": ["\xff"]}', "body is not valid UTF-8 (invalid start byte)"),
])
def test_array_errors(body: bytes, error: str) -> None:
    with pytest.raises(JSONStreamError) as e:
        list(iter_object_array(body, "requests", window=4))
    assert str(e.value) == error


def test_line_splitter_skips_and_counts_lines_over_the_cap() -> None:
    s = LineSplitter(10)
    assert s.feed(b"ab\ncd") == [b"ab"]
    assert s.feed(b"e\r\n0123456789012345") == [b"cde"]
    assert s.feed(b"67\nxy") == []
    assert s.feed(b"") == [b"xy"]
    assert s.skipped == 1


# -- Message Batches bodies -----------------------------------------------------------------

def test_anthropic_batch_is_estimated_request_by_request() -> None:
    reqs = [areq(i, max_tokens=8192) for i in range(40)] + [areq(99, "claude-y", 10)]
    p = parse_anthropic_batch(j({"requests": reqs}), sample=8)
    s = p.summary
    assert p.error is None and s is not None
    one = parse_request("anthropic.messages", j(reqs[0]["params"]))
    assert s.requests == 41 and s.models == ("claude-x", "claude-y") and s.model is None
    assert s.input_tokens == sum(parse_request("anthropic.messages", j(r["params"]))
                                 .input_tokens_est for r in reqs)
    assert s.output_tokens() == 40 * 8192 + 10
    assert s.parts[0].outputs == ((8192, 1, 40),)
    assert one.input_tokens_est == 4  # "hello there 0"
    assert (len(p.sample), p.sampled) == (8, True)
    small = parse_anthropic_batch(j({"requests": reqs[:3]}))
    assert (len(small.sample), small.sampled) == (3, False)
    assert small.sample[0].last_user_text == "hello there 0"


@pytest.mark.parametrize(("body", "error"), [
    ({"requests": []}, "the batch holds no requests"),
    ({"requests": [{"custom_id": "a"}]}, "requests[0] is not {custom_id: string, params: object}"),
    ({"requests": [{"params": {}}]}, "requests[0] is not {custom_id: string, params: object}"),
    ({"requests": [areq(i, f"m{i}") for i in range(33)]},
     "a batch may name at most 32 different models"),
    ({"requests": [areq(i) for i in range(4)]},
     "a batch may hold at most 3 requests through this proxy"),
])
def test_anthropic_batch_errors(body: dict, error: str) -> None:
    p = parse_anthropic_batch(j(body), max_requests=3 if len(body["requests"]) == 4 else 99)
    assert (p.summary, p.error) == (None, error)


def test_output_cap_rewrite_of_a_batch() -> None:
    reqs = [areq(0, max_tokens=8192), areq(1, max_tokens=10), {"custom_id": "x", "params": {
        "model": "m", "messages": []}}]
    out = json.loads(anthropic_batch_with_max_output(j({"requests": reqs}), 256))
    assert [r["params"]["max_tokens"] for r in out["requests"]] == [256, 10, 256]
    assert anthropic_batch_with_max_output(b"{", 5) is None


# -- summaries ------------------------------------------------------------------------------

def test_summary_json_round_trip_and_coarse_caps() -> None:
    t = BatchTally(sample=2, rng=lambda n: 0)
    for cap in range(70):  # more distinct caps than kept: rounded up, marked coarse
        assert t.add(parse_request("openai.chat", j({
            "model": "gpt-x", "max_tokens": cap + 1, "n": 2,
            "messages": [{"role": "user", "content": "x" * 40}]}))) is None
    s = t.summary()
    assert s.coarse and s.requests == 70
    assert s.output_tokens() >= 2 * sum(range(1, 71))  # rounding only raises the charge
    assert BatchSummary.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_k_smallest_and_model_names_of_results() -> None:
    assert k_smallest([(5, 2), (1, 3), (9, 1)], 4) == 1 * 3 + 5
    assert k_smallest([(5, 2)], 10) == 10
    assert part_of("gpt-4o-2024-08-06", ["gpt-4o", "gpt-4o-mini"]) == "gpt-4o"
    assert part_of("gpt-4o-mini-2024-07-18", ["gpt-4o", "gpt-4o-mini"]) == "gpt-4o-mini"
    assert part_of("claude-x", ["claude-x"]) == "claude-x"
    assert part_of("gpt-4o2", ["gpt-4o"]) is False
    assert part_of(None, ["only"]) == "only"
    assert part_of("other", ["a", "b"]) is False


# -- OpenAI batch input files ---------------------------------------------------------------

def line(i: int, url: str = "/v1/chat/completions", body: dict | None = None) -> bytes:
    return j({"custom_id": f"q{i}", "method": "POST", "url": url, "body": body or {
        "model": "gpt-x", "max_tokens": 50, "n": 2,
        "messages": [{"role": "user", "content": "hi " * 20}]}})


def test_file_lines_are_estimated_by_their_endpoint() -> None:
    data = b"\xef\xbb\xbf" + b"\n".join([line(0), line(1), b"", line(2, "/v1/embeddings", {
        "model": "emb", "input": ["abcd" * 10]}), line(3, "/v1/responses", {
            "model": "gpt-y", "input": "x" * 8, "max_output_tokens": 7})]) + b"\r\n"
    est = FileEstimator()
    for i in range(0, len(data), 13):
        est.feed(data[i:i + 13])
    p = est.result()
    s = p.summary
    assert (p.unmetered, p.error, p.endpoints) == (0, None, (
        "/v1/chat/completions", "/v1/embeddings", "/v1/responses"))
    assert s is not None and s.requests == 4
    assert {m.model: (m.requests, m.input_tokens, m.output_tokens(0)) for m in s.parts} == {
        "gpt-x": (2, 30, 200), "emb": (1, 10, 0), "gpt-y": (1, 2, 7)}


def test_file_lines_that_cannot_be_metered_are_counted() -> None:
    est = FileEstimator(max_line=400)
    for chunk in (line(0), b"\nnot json\n", line(1, "/v1/images/generations"), b"\n",
                  j({"custom_id": "g", "method": "GET", "url": "/v1/chat/completions",
                     "body": {}}), b"\n", line(2, body={"model": "m", "messages": [
                         {"role": "user", "content": "y" * 500}]}), b"\n"):
        est.feed(chunk)
    p = est.result()
    assert p.unmetered == 4 and p.summary is not None and p.summary.requests == 1


def multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("size", [1, 3, 64, 100_000])
def test_multipart_reader_streams_the_file_part(size: int) -> None:
    file_data = b"\n".join(line(i) for i in range(5)) + b"\r\n--not-the-boundary\r\n"
    body = multipart("XyZ123", [("purpose", None, b"batch"), ("file", "in.jsonl", file_data),
                                ("expires_after[seconds]", None, b"3600")])
    got: list[bytes] = []
    mr = MultipartReader(boundary_of("multipart/form-data; boundary=XyZ123"), got.append)
    for i in range(0, len(body), size):
        mr.feed(body[i:i + size])
    mr.feed(b"")
    assert (mr.finished, mr.error, mr.file_name) == (True, None, "in.jsonl")
    assert b"".join(got) == file_data and got[-1] == b""
    assert mr.fields == {"purpose": ["batch"], "expires_after[seconds]": ["3600"]}


def test_the_boundary_inside_the_file_followed_by_other_bytes_is_data() -> None:
    """A reader that stopped at ``\\r\\n--boundary`` + anything would see less of the file
    than the upstream stores (and estimate less than the batch spends)."""
    file_data = line(0) + b"\r\n--BndX\r\n" + line(1) + b"\r\n--Bnd \tX"
    body = multipart("Bnd", [("purpose", None, b"batch"), ("file", "x", file_data)])
    for size in (1, 2, 7, 1000):
        got: list[bytes] = []
        mr = MultipartReader("Bnd", got.append)
        for i in range(0, len(body), size):
            mr.feed(body[i:i + size])
        mr.feed(b"")
        assert (mr.error, b"".join(got)) == (None, file_data), size
    mr = MultipartReader("Bnd", lambda _: None)
    mr.feed(b"--Bnd x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n")
    assert mr.error == "bad multipart delimiter line"


def test_multipart_reader_refuses_ambiguity() -> None:
    body = multipart("b", [("file", "a", b"1"), ("file", "b", b"2")])
    mr = MultipartReader("b", lambda _: None)
    mr.feed(body)
    assert mr.error == "more than one file part"
    mr = MultipartReader("b", lambda _: None)
    mr.feed(multipart("b", [("file", "a", b"1")])[:-10])
    mr.feed(b"")
    assert mr.error == "multipart body ends before its closing boundary"
    assert boundary_of('multipart/form-data; boundary="q r"') == "q r"
    assert boundary_of("application/json") is None


# -- results and batch objects --------------------------------------------------------------

def result_line(i: int, kind: str = "succeeded", text: str = "x", model: str = "claude-x-1"
                ) -> bytes:
    res: dict = {"type": kind}
    if kind == "succeeded":
        res["message"] = {"id": "m", "type": "message", "role": "assistant", "model": model,
                          "content": [{"type": "text", "text": text}],
                          "usage": {"input_tokens": 10, "output_tokens": 5 + i,
                                    "cache_read_input_tokens": 2}}
    return j({"custom_id": f"r{i}", "result": res})


@pytest.mark.parametrize("size", [5, 4097, 1 << 20])
def test_results_meter_reads_long_and_short_lines(size: int) -> None:
    """A long answer is read by its head and usage tail (a 'usage' key inside the answer's
    text does not fool it: it is escaped there)."""
    long_text = 'say "usage": {"input_tokens": 99999} ' * 300
    data = b"\n".join([result_line(0), result_line(1, text=long_text),
                       result_line(2, "canceled"), result_line(3, "errored")]) + b"\n"
    m = ResultsMeter("anthropic")
    out = b"".join(m.feed(data[i:i + size]) for i in range(0, len(data), size))
    m.feed(b"")
    assert out == data
    assert (m.lines, m.succeeded, m.unreadable, m.ended) == (4, 2, 0, True)
    assert m.usage() == {"claude-x-1": Usage(20, 11, 0, 4)}


def test_results_meter_openai_output_lines() -> None:
    body = {"id": "c", "object": "chat.completion", "model": "gpt-x-2024",
            "choices": [{"message": {"content": "y" * 6000}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 40,
                      "prompt_tokens_details": {"cached_tokens": 10}}}
    good = j({"id": "b1", "custom_id": "q", "error": None,
              "response": {"status_code": 200, "body": body}})
    failed = j({"id": "b2", "custom_id": "q2", "response": {"status_code": 400, "body": {}}})
    m = ResultsMeter("openai")
    m.feed(good + b"\n" + failed + b"\n" + b"garbage\n")
    m.feed(b"")
    assert (m.lines, m.succeeded, m.unreadable) == (3, 1, 1)
    assert m.usage() == {"gpt-x-2024": Usage(20, 40, 0, 10)}


def test_batch_states_and_results_url() -> None:
    ended = {"id": "msgbatch_1", "type": "message_batch", "processing_status": "ended",
             "request_counts": {"succeeded": 3, "canceled": 2},
             "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_1/results"}
    oai = {"id": "batch_1", "object": "batch", "status": "cancelled", "output_file_id": "f-o",
           "request_counts": {"total": 5, "completed": 2, "failed": 0}}
    failed = {**oai, "id": "batch_2", "status": "failed", "output_file_id": None}
    states = batch_states(j({"data": [ended, oai, failed, {"id": "x"}]}))
    assert [(s.id, s.provider, s.ended, s.succeeded, s.output_file_id) for s in states] == [
        ("msgbatch_1", "anthropic", True, 3, None), ("batch_1", "openai", True, 2, "f-o"),
        ("batch_2", "openai", True, 0, None)]
    new = json.loads(rewrite_results_urls(j(ended), ""))
    assert new["results_url"] == "/v1/messages/batches/msgbatch_1/results"
    new = json.loads(rewrite_results_urls(j({"data": [ended]}), "https://gw.example/"))
    assert new["data"][0]["results_url"] == \
        "https://gw.example/v1/messages/batches/msgbatch_1/results"
    assert rewrite_results_urls(j({**ended, "results_url": None}), "") is None
