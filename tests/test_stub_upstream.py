"""The stand-in upstream: official SDKs against it, test knobs, introspection, CLI."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from hydraguard.apis import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    Usage,
    make_stream_meter,
    parse_request,
    usage_from_json,
    with_include_usage,
)
from hydraguard_dev.upstream import StubServer, input_tokens_for, start_stub

USER = [{"role": "user", "content": "hello there friend"}]  # 18 chars
SYSTEM = "be brief"  # 8 chars -> with USER: 26 // 4 = 6 input tokens


@pytest.fixture(scope="module")
def server() -> Iterator[StubServer]:
    srv, _ = start_stub()
    yield srv
    srv.shutdown()


@pytest.fixture
def url(server: StubServer) -> str:
    httpx.post(f"http://127.0.0.1:{server.port}/__stub/reset")
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def ac(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)


@pytest.fixture
def oc(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)


def raw(url: str, path: str, body: dict, headers: dict[str, str] | None = None
        ) -> tuple[bytes, Exception | None]:
    """POST and read the raw body, returning what arrived before any transport error."""
    got: list[bytes] = []
    try:
        with httpx.stream("POST", url + path, json=body, headers=headers or {}, timeout=10) as r:
            for c in r.iter_raw():
                got.append(c)
    except httpx.HTTPError as e:
        return b"".join(got), e
    return b"".join(got), None


def test_input_tokens_for() -> None:
    assert input_tokens_for({"system": SYSTEM, "messages": USER}) == 6
    assert input_tokens_for({"model": "a-very-long-model-name-here"}) == 1
    items = [{"content": [{"type": "input_text", "text": "x" * 40}]}]
    assert input_tokens_for({"input": items}) == 10


# -- Anthropic --------------------------------------------------------------------------------


def test_anthropic_json(ac: anthropic.Anthropic) -> None:
    m = ac.messages.create(model="claude-stub", max_tokens=1000, system=SYSTEM, messages=USER)
    assert (m.usage.input_tokens, m.usage.output_tokens) == (6, 64)
    assert m.content[0].text == " ".join(["tok"] * 64)
    assert m.stop_reason == "end_turn"
    assert m.model == "claude-stub"
    m = ac.messages.create(model="claude-stub", max_tokens=5, messages=USER)
    assert (m.usage.output_tokens, m.stop_reason, m.content[0].text) == (
        5, "max_tokens", "tok tok tok tok tok")


def test_anthropic_stream_helper(ac: anthropic.Anthropic) -> None:
    with ac.messages.stream(model="claude-stub", max_tokens=100, system=SYSTEM, messages=USER,
                            extra_headers={"x-stub-output-tokens": "12"}) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == " ".join(["tok"] * 12)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (6, 12)
    assert final.stop_reason == "end_turn"


def test_anthropic_raw_stream_matches_sdk_usage(url: str) -> None:
    body = {"model": "m", "max_tokens": 30, "stream": True, "system": SYSTEM, "messages": USER}
    data, err = raw(url, "/v1/messages", body)
    assert err is None
    assert data.count(b"event: message_delta") == 2
    assert data.count(b"event: content_block_delta") == 30
    assert b"event: ping" in data
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    assert m.feed(data) == data
    m.feed(b"")
    assert (m.usage, m.usage_reported, m.completed) == (Usage(6, 30), True, True)


def test_anthropic_count_tokens_and_models(url: str, ac: anthropic.Anthropic) -> None:
    r = ac.messages.count_tokens(model="m", system=SYSTEM, messages=USER)
    assert r.input_tokens == 6
    assert [m.id for m in ac.models.list()] == ["stub-model", "claude-stub", "gpt-stub"]


# -- OpenAI chat ------------------------------------------------------------------------------


def test_chat_json(oc: openai.OpenAI) -> None:
    c = oc.chat.completions.create(model="gpt-stub", max_completion_tokens=7, messages=[
        {"role": "system", "content": SYSTEM}, *USER])
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (6, 7, 13)
    assert c.choices[0].finish_reason == "length"
    assert c.choices[0].message.content == " ".join(["tok"] * 7)


def test_chat_stream_with_usage(oc: openai.OpenAI) -> None:
    chunks = list(oc.chat.completions.create(
        model="gpt-stub", messages=USER, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-stub-output-tokens": "4"}))
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 4)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok tok tok tok"
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_chat_stream_without_usage(url: str, oc: openai.OpenAI) -> None:
    chunks = list(oc.chat.completions.create(model="gpt-stub", messages=USER, stream=True,
                                             max_tokens=3))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    data, _ = raw(url, "/v1/chat/completions",
                  {"model": "m", "messages": USER, "stream": True, "max_tokens": 3})
    assert b'"usage"' not in data
    assert data.endswith(b"data: [DONE]\n\n")


def test_hidden_usage_chunk_looks_like_plain_stream(url: str) -> None:
    """Proxy flow: inject include_usage, meter with hide_usage_chunk: client bytes unchanged
    except for the `"usage":null` members, and the SDK parses them."""
    client_body = {"model": "m", "messages": USER, "stream": True, "max_tokens": 9}
    injected = with_include_usage(json.dumps(client_body).encode())
    assert injected is not None
    data, _ = raw(url, "/v1/chat/completions", json.loads(injected))
    m = make_stream_meter(OPENAI_CHAT, hide_usage_chunk=True)
    out = m.feed(data[:100]) + m.feed(data[100:]) + m.feed(b"")
    plain, _ = raw(url, "/v1/chat/completions", client_body)
    def norm(b: bytes) -> bytes:
        return re.sub(rb'"(chatcmpl-stub\d+)"', b'"ID"', re.sub(rb'"created":\d+', b"", b))

    assert norm(out.replace(b',"usage":null', b"")) == norm(plain)
    assert m.usage == Usage(4, 9)
    assert m.usage_reported


# -- OpenAI Responses -------------------------------------------------------------------------


def test_responses_json(oc: openai.OpenAI) -> None:
    r = oc.responses.create(model="gpt-stub", instructions=SYSTEM, input="hello there friend")
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (6, 64, 70)
    assert r.output_text == " ".join(["tok"] * 64)
    assert r.status == "completed"


def test_responses_stream_create(oc: openai.OpenAI) -> None:
    events = list(oc.responses.create(model="gpt-stub", input="hello there friend", stream=True,
                                      extra_headers={"x-stub-output-tokens": "3"}))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.count("response.output_text.delta") == 3
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    u = events[-1].response.usage
    assert (u.input_tokens, u.output_tokens) == (4, 3)


def test_responses_stream_helper_incomplete(oc: openai.OpenAI) -> None:
    with oc.responses.stream(model="gpt-stub", input="hello there friend",
                             max_output_tokens=2) as s:
        events = list(s)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["tok", " tok"]
    final = events[-1]
    assert final.type == "response.incomplete"  # like OpenAI when max_output_tokens is hit
    assert final.response.output_text == "tok tok"
    assert final.response.usage.output_tokens == 2
    with oc.responses.stream(model="gpt-stub", input="hello there friend",
                             extra_headers={"x-stub-output-tokens": "2"}) as s:
        assert s.get_final_response().output_text == "tok tok"


def test_responses_raw_stream_meter(url: str) -> None:
    data, _ = raw(url, "/v1/responses", {"model": "m", "input": "x" * 400, "stream": True})
    m = make_stream_meter(OPENAI_RESPONSES)
    m.feed(data)
    m.feed(b"")
    assert (m.usage, m.completed) == (Usage(100, 64), True)


# -- knobs ------------------------------------------------------------------------------------


def test_status_knob(ac: anthropic.Anthropic, oc: openai.OpenAI, url: str) -> None:
    with pytest.raises(anthropic.InternalServerError) as ea:
        ac.messages.create(model="m", max_tokens=5, messages=USER,
                           extra_headers={"x-stub-status": "500"})
    assert ea.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError):
        ac.messages.create(model="m", max_tokens=5, messages=USER,
                           extra_headers={"x-stub-status": "429"})
    with pytest.raises(openai.InternalServerError):
        oc.chat.completions.create(model="m", messages=USER, extra_headers={"x-stub-status": "503"})
    with pytest.raises(openai.PermissionDeniedError):
        oc.responses.create(model="m", input="x", extra_headers={"x-stub-status": "403"})
    r = httpx.post(url + "/v1/messages", json={}, headers={"x-stub-status": "529"})
    assert r.status_code == 529
    assert r.json()["error"]["type"] == "overloaded_error"
    assert r.headers["request-id"].startswith("stub")


def test_cut_after_knob(url: str) -> None:
    body = {"model": "m", "max_tokens": 20, "stream": True, "messages": USER}
    data, err = raw(url, "/v1/messages", body, {"x-stub-cut-after": "8"})
    assert isinstance(err, httpx.RemoteProtocolError)  # incomplete chunked body: detectable
    assert data.count(b"\n\n") == 8
    m = make_stream_meter(ANTHROPIC_MESSAGES)
    m.feed(data)
    m.feed(b"")
    assert (m.usage, m.usage_reported, m.completed) == (Usage(4, 5), False, False)
    # the server is still fine afterwards
    data, err = raw(url, "/v1/messages", body)
    assert err is None and data.endswith(b'{"type":"message_stop"}\n\n')


def test_cut_after_with_sdk(oc: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):  # noqa: SIM117
        with oc.chat.completions.create(model="m", messages=USER, stream=True,
                                        extra_headers={"x-stub-cut-after": "3"}) as s:
            list(s)


def test_error_after_knob(ac: anthropic.Anthropic, oc: openai.OpenAI, url: str) -> None:
    with pytest.raises(anthropic.APIStatusError) as ei:  # noqa: SIM117
        with ac.messages.stream(model="m", max_tokens=20, messages=USER,
                                extra_headers={"x-stub-error-after": "5"}) as s:
            list(s)
    assert "overloaded_error" in str(ei.value)
    with pytest.raises(openai.APIError):
        list(oc.chat.completions.create(model="m", messages=USER, stream=True,
                                        extra_headers={"x-stub-error-after": "2"}))
    data, err = raw(url, "/v1/responses", {"model": "m", "input": "x", "stream": True},
                    {"x-stub-error-after": "3"})
    assert err is None
    m = make_stream_meter(OPENAI_RESPONSES)
    m.feed(data)
    m.feed(b"")
    assert (m.error, m.completed) == ("server_error: stub failure", False)


def test_delay_knob_first_byte_is_early(url: str) -> None:
    body = {"model": "m", "messages": USER, "stream": True, "max_tokens": 4}  # 7 events
    t0 = time.monotonic()
    with httpx.stream("POST", url + "/v1/chat/completions", json=body,
                      headers={"x-stub-delay-ms": "60"}) as r:
        it = r.iter_raw()
        next(it)
        first = time.monotonic() - t0
        for _ in it:
            pass
    total = time.monotonic() - t0
    assert first < 0.2
    assert total >= 0.36  # six 60 ms gaps


def test_output_tokens_knob_and_cap(url: str) -> None:
    r = httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": USER},
                   headers={"x-stub-output-tokens": "0"})
    assert usage_from_json(OPENAI_CHAT, r.content) == Usage(4, 0)
    r = httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": USER,
                                                       "max_tokens": 2},
                   headers={"x-stub-output-tokens": "10"})
    assert usage_from_json(OPENAI_CHAT, r.content) == Usage(4, 2)


# -- introspection ----------------------------------------------------------------------------


def test_stats_and_last(url: str, ac: anthropic.Anthropic, oc: openai.OpenAI) -> None:
    assert httpx.get(url + "/__stub/stats").json() == {}
    ac.messages.create(model="claude-stub", max_tokens=5, messages=USER)
    ac.messages.create(model="claude-stub", max_tokens=5, messages=USER,
                       extra_headers={"x-marker": "two"})
    oc.chat.completions.create(model="gpt-stub", messages=USER, max_tokens=3)
    assert httpx.get(url + "/__stub/stats").json() == {
        "/v1/messages": 2, "/v1/chat/completions": 1}
    last = httpx.get(url + "/__stub/last", params={"path": "/v1/messages"}).json()
    assert last["headers"]["x-marker"] == "two"
    assert "anthropic-version" in last["headers"]  # (this SDK sends the key as a Bearer token)
    assert last["body"]["max_tokens"] == 5
    assert parse_request(ANTHROPIC_MESSAGES, json.dumps(last["body"]).encode()).model == (
        "claude-stub")
    last = httpx.get(url + "/__stub/last?path=/v1/chat/completions").json()
    assert last["body"]["max_tokens"] == 3
    r = httpx.get(url + "/__stub/last", params={"path": "/v1/responses"})
    assert r.status_code == 404


def test_bad_requests(url: str) -> None:
    r = httpx.post(url + "/v1/messages", content=b"{nope")
    assert r.status_code == 400 and r.json()["type"] == "error"
    r = httpx.post(url + "/v1/chat/completions", content=b"[]")
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.post(url + "/v2/other", json={})
    assert r.status_code == 404
    r = httpx.post(url + "/v1/messages", content=b'{"model":"m","max_tokens":2,"messages":[]}',
                   headers={"transfer-encoding": "chunked"})
    assert r.status_code == 200 and r.json()["usage"]["output_tokens"] == 2


def test_keep_alive(url: str, server: StubServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    body = json.dumps({"model": "m", "max_tokens": 2, "messages": USER, "stream": True})
    for _ in range(3):
        conn.request("POST", "/v1/messages", body, {"content-type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("transfer-encoding") == "chunked"
        assert r.read().endswith(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": USER}))
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["usage"]["completion_tokens"] == 64
    sock = conn.sock
    assert sock is not None
    conn.close()


def test_start_and_shutdown_closes_everything() -> None:
    srv, port = start_stub()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/__stub/stats")
    assert conn.getresponse().read() == b"{}"
    srv.shutdown()
    srv.shutdown()  # idempotent
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("GET", "/__stub/stats")
        conn.getresponse().read()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_cli_port_file(tmp_path: Path) -> None:
    pf = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-m", "hydraguard_dev.upstream", "--port", "0",
                             "--port-file", str(pf)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        port = int(line)
        assert int(pf.read_text()) == port
        r = httpx.post(f"http://127.0.0.1:{port}/v1/responses", json={"model": "m", "input": "x"})
        assert r.json()["usage"]["input_tokens"] == 1
        assert httpx.get(f"http://127.0.0.1:{port}/__stub/stats").json() == {"/v1/responses": 1}
    finally:
        proc.terminate()
        proc.wait(10)
