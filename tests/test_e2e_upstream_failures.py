"""End to end: an upstream that is down, resets, or goes silent, behind the real proxy, seen
through the official SDKs. The client gets the provider's JSON error (no mitmproxy page, no
upstream address), the decision log the status sent, and the budget reservation is released
(a 2nd request that would not fit beside an unreleased one still reaches the upstream)."""

from __future__ import annotations

import contextlib
import socket
import uuid

import anthropic
import httpx2
import openai
import pytest

from hydraguard_dev.procs import free_port, proxy, wait_until

pytestmark = pytest.mark.e2e

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
  upstream_connect_timeout: 1
  upstream_read_timeout: 1
clusters:
  - id: acct
    key: [account]
budgets:
  - id: day
    windows: [{per: day, tokens: 1000}]
    clusters: [acct]
"""
BODY = [{"role": "user", "content": "hi"}]
MAX = 600  # reserved per call (+ input): a 2nd call fits only if the 1st was released


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture(scope="module")
def gw(stub, rules):
    with proxy(stub.url, rules) as p:
        yield p


@pytest.fixture(scope="module")
def closed(rules):
    """A proxy in front of a port nobody listens on."""
    with proxy(f"http://127.0.0.1:{free_port()}", rules) as p:
        yield p


@contextlib.contextmanager
def blackhole():
    """A listening socket whose accept queue is full: connecting to it never completes."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        filler = socket.create_connection(srv.getsockname())  # takes the one queue slot
        try:
            yield f"http://127.0.0.1:{srv.getsockname()[1]}"
        finally:
            filler.close()


def key() -> str:
    return "sk-test-" + uuid.uuid4().hex


def ant(p, k, **headers):
    return anthropic.Anthropic(base_url=p.url, api_key=k, max_retries=0, timeout=60,
                               default_headers=headers)


def oai(p, k, **headers):
    return openai.OpenAI(base_url=p.url + "/v1", api_key=k, max_retries=0, timeout=60,
                         default_headers=headers)


def ant_call(c, model, stream=False):
    return c.messages.create(model=model, max_tokens=MAX, messages=BODY, stream=stream)


def oai_call(c, model):
    return c.chat.completions.create(model=model, max_tokens=MAX, messages=BODY)


def recs(p, model, n):
    wait_until(lambda: len([r for r in p.lines() if r.get("model") == model]) >= n, 10,
               f"{n} lines of {model}")
    return [r for r in p.lines() if r.get("model") == model]


def check_clean(err, status: int) -> None:
    """A provider JSON error: no mitmproxy banner, no upstream address."""
    r = err.response
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert "mitmproxy" not in r.headers.get("server", "") and "<html" not in r.text
    assert "127.0.0.1" not in r.text


def check_logged(p, model, n, status, failure):
    lines = recs(p, model, n)
    for rec in lines:
        assert (rec["action"], rec["status"], rec["upstream_status"]) == ("allow", status, None)
        assert rec["upstream_failure"] == failure
        assert rec["budget"][0]["charged"] == 0 and rec["budget"][0]["remaining"] == 1000
    return lines


def test_closed_port_anthropic(closed):
    c = ant(closed, key())
    for _ in range(2):  # the 2nd fits only because the 1st reservation was released
        with pytest.raises(anthropic.InternalServerError) as e:
            ant_call(c, "down-a")
        check_clean(e.value, 502)
        assert e.value.body["error"]["type"] == "api_error"
        assert e.value.body["error"]["message"].startswith("the upstream API could not be")
        assert e.value.body["request_id"] == e.value.response.headers["request-id"]
    lines = check_logged(closed, "down-a", 2, 502, "unreachable")
    assert lines[-1]["request_id"] == e.value.response.headers["request-id"]
    assert "Connect call failed" in lines[-1]["error"]  # the operator's log has the detail


def test_closed_port_openai(closed):
    with pytest.raises(openai.InternalServerError) as e:
        oai_call(oai(closed, key()), "down-o")
    check_clean(e.value, 502)
    assert (e.value.type, e.value.code) == ("server_error", "bad_gateway")
    check_logged(closed, "down-o", 1, 502, "unreachable")


def test_connection_reset_before_response(gw):
    k = key()
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError) as e:
            ant_call(ant(gw, k, **{"x-stub-reset": "1"}), "reset-a")
        check_clean(e.value, 502)
    with pytest.raises(openai.InternalServerError) as e2:
        oai_call(oai(gw, k, **{"x-stub-reset": "1"}), "reset-o")
    check_clean(e2.value, 502)
    check_logged(gw, "reset-a", 2, 502, "failed")
    check_logged(gw, "reset-o", 1, 502, "failed")


def test_stalled_upstream_times_out(gw):
    k = key()
    for _ in range(2):
        with pytest.raises(anthropic.GatewayTimeoutError) as e:
            ant_call(ant(gw, k, **{"x-stub-stall": "0"}), "stall-a")
        check_clean(e.value, 504)
        assert e.value.body["error"] == {"type": "timeout_error",
                                         "message": "the upstream API did not answer in time"}
    with pytest.raises(openai.InternalServerError) as e2:
        oai_call(oai(gw, k, **{"x-stub-stall": "0"}), "stall-o")
    check_clean(e2.value, 504)
    assert (e2.value.status_code, e2.value.code) == (504, "gateway_timeout")
    lines = check_logged(gw, "stall-a", 2, 504, "read_timeout")
    assert lines[0]["error"].startswith("upstream read timeout after 1s")
    check_logged(gw, "stall-o", 1, 504, "read_timeout")
    assert msg_ok(gw, k)  # the account's budget is whole again


def msg_ok(p, k) -> bool:
    return ant_call(ant(p, k), "stall-after").usage.output_tokens > 0


def test_stream_stalling_mid_way_ends_and_settles(gw):
    """Head and 3 events, then silence: the stream ends (the head is sent, no JSON answer
    possible), and the tokens delivered are charged, the rest released."""
    c = ant(gw, key(), **{"x-stub-stall": "3", "x-stub-output-tokens": "50"})
    with pytest.raises((anthropic.APIConnectionError, httpx2.HTTPError)):
        for _ in ant_call(c, "stall-stream", stream=True):
            pass
    rec = recs(gw, "stall-stream", 1)[0]
    assert (rec["status"], rec["upstream_status"], rec["upstream_failure"]) == (
        200, 200, "read_timeout")
    assert rec["usage_source"] == "stream_estimate"
    b = rec["budget"][0]
    assert 0 < b["charged"] < MAX and b["remaining"] == 1000 - b["charged"]


def test_connect_timeout(rules):
    with blackhole() as url, proxy(url, rules) as p:
        with pytest.raises(anthropic.GatewayTimeoutError) as e:
            ant_call(ant(p, key()), "connect-a")
        check_clean(e.value, 504)
        assert "did not accept a connection" in e.value.body["error"]["message"]
        rec = check_logged(p, "connect-a", 1, 504, "connect_timeout")[0]
        assert rec["error"].startswith("upstream connect timeout after 1s")
