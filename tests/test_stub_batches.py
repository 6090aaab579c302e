"""The stand-in upstream's batches, files and older endpoints, with the official SDKs straight
against it (no proxy): what the end-to-end tests build on."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from hydraguard.apis.legacy import LegacyMeter
from hydraguard_dev.upstream import StubServer, start_stub

PROMPT = "y" * 40  # 10 tokens


@pytest.fixture(scope="module")
def server() -> Iterator[StubServer]:
    srv, _ = start_stub()
    yield srv
    srv.shutdown()


@pytest.fixture
def url(server: StubServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_message_batch_lifecycle(url: str) -> None:
    c = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    reqs = [{"custom_id": f"r{i}", "params": {"model": "claude-stub", "max_tokens": 9,
                                              "messages": [{"role": "user",
                                                            "content": PROMPT}]}}
            for i in range(3)]
    b = c.messages.batches.create(requests=reqs, extra_headers={"x-stub-batch-complete": "2"})
    assert (b.processing_status, b.request_counts.processing, b.results_url) == (
        "in_progress", 3, None)
    assert c.messages.batches.retrieve(b.id).processing_status == "in_progress"
    assert c.messages.batches.cancel(b.id).processing_status == "canceling"
    ended = c.messages.batches.retrieve(b.id)
    assert (ended.processing_status, ended.request_counts.succeeded,
            ended.request_counts.canceled) == ("ended", 2, 1)
    assert ended.results_url == f"http://127.0.0.1:{url.rsplit(':', 1)[1]}/v1/messages/" \
                                f"batches/{b.id}/results"
    results = {r.custom_id: r.result for r in c.messages.batches.results(b.id)}
    assert results["r2"].type == "canceled"
    u = results["r0"].message.usage
    assert (u.input_tokens, u.output_tokens) == (10, 9)
    assert b.id in [x.id for x in c.messages.batches.list()]


def test_openai_batch_lifecycle(url: str) -> None:
    c = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-stub", "max_tokens": 5,
                       "messages": [{"role": "user", "content": PROMPT}]}} for i in range(3)]
    f = c.files.create(file=("b.jsonl", io.BytesIO("\n".join(json.dumps(x) for x in lines)
                                                   .encode())), purpose="batch")
    assert (f.purpose, f.filename) == ("batch", "b.jsonl")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                         completion_window="24h", extra_headers={"x-stub-batch-complete": "1"})
    assert b.status == "validating"
    assert c.batches.retrieve(b.id).status == "in_progress"
    assert c.batches.cancel(b.id).status == "cancelling"
    done = c.batches.retrieve(b.id)
    assert (done.status, done.request_counts.completed) == ("cancelled", 1)
    out = [json.loads(x) for x in c.files.content(done.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in out] == ["q0"]
    assert out[0]["response"]["body"]["usage"]["completion_tokens"] == 5


def test_older_endpoints(url: str) -> None:
    c = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    comp = c.completions.create(model="m", prompt=[PROMPT, "ab"], n=2, max_tokens=3)
    assert (len(comp.choices), comp.usage.prompt_tokens, comp.usage.completion_tokens) == (
        4, 10, 12)
    chunks = list(c.completions.create(model="m", prompt=PROMPT, max_tokens=3, stream=True,
                                       stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 3
    assert c.embeddings.create(model="e", input=PROMPT).usage.prompt_tokens == 10
    r = httpx.post(url + "/v1/complete", json={"model": "c", "prompt": PROMPT,
                                               "max_tokens_to_sample": 4, "stream": True},
                   headers={"x-api-key": "k"})
    m = LegacyMeter("anthropic.complete")
    m.feed(r.content)
    m.feed(b"")
    assert (m.completed, m.usage.output_tokens) == (True, 4)
    r = httpx.post(url + "/v1/responses/input_tokens", json={"model": "m", "input": PROMPT})
    assert r.json() == {"object": "response.input_tokens", "input_tokens": 10}
