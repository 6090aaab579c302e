"""End to end: real mitmdump (via `hydraguard run`) in front of the stand-in upstream,
driven by the official anthropic and openai SDKs."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest

from hydraguard_dev.procs import ROOT, free_port, proxy, wait_until

pytestmark = pytest.mark.e2e

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
  max_body_bytes: 65536
  max_batch_body_bytes: 65536   # mitmproxy's hard cap stays 2 x max_body_bytes (see below)
  max_upload_bytes: 65536
rules:
  - id: blocked-net
    when: {client_ip: [203.0.113.0/24]}
    action: deny
    reason: "requests from this network are not accepted"
  - id: blocked-region
    when: {client_ip: [198.51.100.0/25]}
    action: deny
    deny_as: region
    reason: "Country, region, or territory not supported"
  - id: slow-down
    when: {client_ip: [198.51.100.128/26]}
    action: throttle
    retry_after: 17
    reason: "slow down"
  - id: shadow-watch
    when: {client_ip: [192.0.2.0/24]}
    action: deny
    shadow: true
"""


@pytest.fixture(scope="module")
def gw(stub, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules.write_text(RULES)
    with proxy(stub.url, rules) as p:
        yield p


def ant(gw, ip=None, key="sk-ant-test-key-1"):
    headers = {"x-forwarded-for": ip} if ip else {}
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0,
                               default_headers=headers)


def oai(gw, ip=None, key="sk-openai-test-key-1"):
    headers = {"x-forwarded-for": ip} if ip else {}
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0,
                         default_headers=headers)


def last_line(gw, n_before):
    lines = gw.wait_lines(n_before + 1)
    return lines[-1]


def test_anthropic_allowed_json_logged_with_usage(gw):
    n = len(gw.lines())
    msg = ant(gw).messages.create(model="claude-haiku-4", max_tokens=20,
                                  messages=[{"role": "user", "content": "hello there"}])
    assert msg.usage.output_tokens == 20
    rec = last_line(gw, n)
    assert rec["action"] == "allow" and rec["rule"] == "default"
    assert rec["api"] == "anthropic.messages" and rec["model"] == "claude-haiku-4"
    assert rec["status"] == 200 and rec["upstream_status"] == 200
    assert rec["output_tokens"] == 20 and rec["input_tokens"] == msg.usage.input_tokens
    assert rec["usage_source"] == "json"
    assert rec["account"].startswith("acct_") and "sk-ant" not in json.dumps(rec)
    assert "hello there" not in gw.log_path.read_text()
    assert rec["client_ip"] == "127.0.0.1" and isinstance(rec["decision_us"], int)


def test_anthropic_denied_is_permission_error(gw, stub):
    before = stub.stats().get("/v1/messages", 0)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        ant(gw, "203.0.113.5").messages.create(
            model="claude-haiku-4", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 403
    assert "requests from this network are not accepted" in str(e.value)
    assert e.value.body["error"]["type"] == "permission_error"
    assert stub.stats().get("/v1/messages", 0) == before  # never reached the upstream
    rec = gw.by_request(e.value.response.headers["request-id"])
    assert (rec["action"], rec["rule"], rec["status"], rec["upstream_status"]) == (
        "deny", "blocked-net", 403, None)
    assert rec["client_ip"] == "203.0.113.5" and rec["client_ip_source"] == "x-forwarded-for"


def test_openai_region_denial(gw):
    with pytest.raises(openai.PermissionDeniedError) as e:
        oai(gw, "198.51.100.3").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 403
    assert e.value.code == "unsupported_country_region_territory"
    assert "Country, region, or territory not supported" in e.value.message


def test_throttle_is_rate_limit_with_retry_after(gw):
    with pytest.raises(openai.RateLimitError) as e:
        oai(gw, "198.51.100.130").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert e.value.response.headers["retry-after"] == "17"
    assert e.value.code == "rate_limit_exceeded"
    with pytest.raises(anthropic.RateLimitError) as e2:
        ant(gw, "198.51.100.130").messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e2.value.response.headers["retry-after"] == "17"
    assert e2.value.body["error"]["type"] == "rate_limit_error"


def test_spoofed_forwarding_from_untrusted_peer_ignored(stub, tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES.replace("trusted_proxies: [127.0.0.1/32]", "trusted_proxies: []"))
    with proxy(stub.url, rules) as p:
        msg = ant(p, "203.0.113.5").messages.create(
            model="m", max_tokens=3, messages=[{"role": "user", "content": "x"}])
        assert msg.usage.output_tokens == 3
        rec = p.wait_lines(1)[-1]
        assert (rec["client_ip"], rec["client_ip_source"], rec["rule"]) == (
            "127.0.0.1", "peer", "default")


def test_shadow_rule_lets_request_through(gw):
    n = len(gw.lines())
    out = oai(gw, "192.0.2.44").chat.completions.create(
        model="gpt-4o-mini", max_tokens=7, messages=[{"role": "user", "content": "hi"}])
    assert out.usage.completion_tokens == 7
    rec = last_line(gw, n)
    assert (rec["action"], rec["rule"], rec["shadow"], rec["enforced"], rec["status"]) == (
        "deny", "shadow-watch", True, False, 200)


def test_anthropic_stream_usage_counted_once(gw):
    n = len(gw.lines())
    with ant(gw).messages.stream(model="claude-haiku-4", max_tokens=30,
                                 messages=[{"role": "user", "content": "stream please"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert final.usage.output_tokens == 30 and text
    rec = last_line(gw, n)
    assert rec["stream"] is True and rec["usage_source"] == "stream"
    assert rec["output_tokens"] == 30 and rec["input_tokens"] == final.usage.input_tokens


def test_openai_stream_usage_injected_and_hidden(gw, stub):
    n = len(gw.lines())
    chunks = list(oai(gw).chat.completions.create(
        model="gpt-4o-mini", max_tokens=12, stream=True,
        messages=[{"role": "user", "content": "count"}]))
    assert chunks and all(c.choices for c in chunks)  # no usage-only chunk leaked
    assert stub.last("/v1/chat/completions")["body"]["stream_options"] == {"include_usage": True}
    rec = last_line(gw, n)
    assert rec["output_tokens"] == 12 and rec["usage_source"] == "stream"


def test_openai_stream_client_usage_kept(gw):
    chunks = list(oai(gw).chat.completions.create(
        model="gpt-4o-mini", max_tokens=9, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "count"}]))
    assert chunks[-1].usage.completion_tokens == 9


def test_responses_api_json_and_stream(gw):
    n = len(gw.lines())
    r = oai(gw).responses.create(model="gpt-4.1", input="hi", max_output_tokens=11)
    assert r.usage.output_tokens == 11
    assert last_line(gw, n)["output_tokens"] == 11
    n = len(gw.lines())
    events = list(oai(gw).responses.create(model="gpt-4.1", input="hi", max_output_tokens=6,
                                           stream=True))
    assert events[-1].type == "response.incomplete"  # the stub stops at max_output_tokens
    rec = last_line(gw, n)
    assert (rec["api"], rec["output_tokens"], rec["usage_source"]) == (
        "openai.responses", 6, "stream")


def test_stream_events_arrive_as_sent(gw):
    """Time to first byte is kept: the first event arrives long before the stream ends."""
    body = {"model": "m", "max_tokens": 6, "stream": True,
            "messages": [{"role": "user", "content": "x"}]}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", "x-stub-delay-ms": "300"}
    t0 = time.monotonic()
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers=headers,
                      timeout=30) as r:
        it = r.iter_raw()
        first = next(it)
        t_first = time.monotonic() - t0
        rest = b"".join(it)
        t_end = time.monotonic() - t0
    assert first.startswith(b"event: message_start")
    # ~10 events each 300 ms apart: the first must not wait for the whole stream
    assert t_end - t_first >= 1.5, (t_first, t_end)
    assert b"message_stop" in rest


def test_malformed_json_gets_provider_400_and_log(gw, stub):
    n = len(gw.lines())
    r = httpx.post(gw.url + "/v1/messages", content=b"{not json",
                   headers={"x-api-key": "k", "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    rec = last_line(gw, n)
    assert (rec["rule"], rec["status"]) == ("bad_body", 400)


def test_body_over_cap_is_413(gw):
    n = len(gw.lines())
    big = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"' + \
        b"a" * 70000 + b'"}]}'
    r = httpx.post(gw.url + "/v1/messages", content=big, headers={"x-api-key": "k"})
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "request_too_large"
    assert last_line(gw, n)["rule"] == "body_too_large"


def test_gzip_request_body_decoded(gw):
    import gzip

    n = len(gw.lines())
    body = json.dumps({"model": "gz-model", "max_tokens": 4,
                       "messages": [{"role": "user", "content": "zip"}]}).encode()
    r = httpx.post(gw.url + "/v1/messages", content=gzip.compress(body),
                   headers={"x-api-key": "k", "content-encoding": "gzip",
                            "content-type": "application/json"})
    rec = last_line(gw, n)
    assert rec["model"] == "gz-model" and rec["action"] == "allow"
    assert r.status_code == 200


def test_gzip_bomb_refused(gw):
    import gzip

    n = len(gw.lines())
    bomb = gzip.compress(b"{" + b" " * 5_000_000 + b"}")
    assert len(bomb) < 65536
    r = httpx.post(gw.url + "/v1/messages", content=bomb,
                   headers={"x-api-key": "k", "content-encoding": "gzip"})
    assert r.status_code == 413
    assert last_line(gw, n)["rule"] == "body_too_large"


def test_non_model_path_passes_and_is_logged(gw):
    n = len(gw.lines())
    r = httpx.get(gw.url + "/v1/models", headers={"x-api-key": "k"})
    rec = last_line(gw, n)
    assert (rec["api"], rec["action"], rec["status"]) == (None, "allow", r.status_code)


def test_healthz_says_ok_and_nothing_more(gw):
    """Any client reaches it: no rules count, no version (`hydraguard health` has those)."""
    r = httpx.get(gw.url + "/__hydraguard/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert r.headers["cache-control"] == "no-store"


def test_ts_and_duration_count_from_the_arrival_of_the_request(gw):
    """A slow upload: the headers arrive, the body a second later. `ts` is when the request
    began to arrive, and `duration_ms` covers the upload and the decision."""
    import socket
    from datetime import datetime

    body = json.dumps({"model": "m", "max_tokens": 3,
                       "messages": [{"role": "user", "content": "slow"}]}).encode()
    head = (f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\n"
            f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    n = len(gw.lines())
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        t_head = time.time()
        s.sendall(head)
        time.sleep(1.0)
        t_body = time.time()
        s.sendall(body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
    rec = last_line(gw, n)
    ts = datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp()
    assert int(t_head * 1000) / 1000 <= ts < t_body  # arrival of the headers, not the body
    assert rec["duration_ms"] >= 500  # the upload (1 s) is inside the duration
    assert rec["duration_ms"] * 1000 >= rec["decision_us"]


def test_upstream_cut_mid_stream_is_logged(gw):
    n = len(gw.lines())
    body = {"model": "m", "max_tokens": 40, "stream": True,
            "messages": [{"role": "user", "content": "x"}]}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", "x-stub-cut-after": "4"}
    with pytest.raises(httpx.HTTPError), httpx.stream(
            "POST", gw.url + "/v1/messages", json=body, headers=headers, timeout=10) as r:
        b"".join(r.iter_raw())
    rec = last_line(gw, n)
    assert rec["error"] and rec["usage_source"] == "stream_estimate"
    assert 0 < rec["output_tokens"] < 40


def test_upstream_unreachable_logged(tmp_path):
    with proxy(f"http://127.0.0.1:{free_port()}", ROOT / "rules" / "default.yaml") as p:
        r = httpx.post(p.url + "/v1/messages", json={"model": "m", "max_tokens": 1,
                                                     "messages": []},
                       headers={"x-api-key": "k"})
        assert r.status_code == 502
        rec = p.wait_lines(1)[-1]
        assert rec["action"] == "allow" and rec["error"]


def test_broken_rules_stop_run_with_position(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - id: x\n    action: nope\n")
    out = subprocess.run([sys.executable, "-m", "hydraguard", "run", "--upstream",
                          "http://127.0.0.1:9", "--rules", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{bad}:4:13: rules[0].action: 'nope' is not one of: allow, deny, throttle" \
        in out.stderr


def test_loads_the_usual_mitmproxy_way(stub, tmp_path):
    """`mitmdump -s addon/hydraguard_addon.py --mode reverse:URL --set hydraguard_rules=...`"""
    import subprocess
    import sys
    from pathlib import Path

    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    log = tmp_path / "d.jsonl"
    port = free_port()
    mitmdump = Path(sys.executable).parent / "mitmdump"
    proc = subprocess.Popen(
        [str(mitmdump), "-s", str(ROOT / "addon" / "hydraguard_addon.py"),
         "--mode", f"reverse:{stub.url}", "--listen-host", "127.0.0.1",
         "--listen-port", str(port), "--set", f"hydraguard_rules={rules}",
         "--set", f"hydraguard_log={log}", "--set", f"hydraguard_status={tmp_path / 's.json'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/__hydraguard/healthz").status_code == 200, 30,
                   "mitmdump -s")
        with pytest.raises(anthropic.PermissionDeniedError):
            anthropic.Anthropic(base_url=url, api_key="k", max_retries=0,
                                default_headers={"x-forwarded-for": "203.0.113.5"}
                                ).messages.create(model="m", max_tokens=1,
                                                  messages=[{"role": "user", "content": "x"}])
        wait_until(lambda: log.exists() and log.read_text().strip(), 10, "log line")
        rec = json.loads(log.read_text().splitlines()[-1])
        assert (rec["rule"], rec["status"]) == ("blocked-net", 403)
        wait_until(lambda: (tmp_path / "s.json").exists(), 10, "status file")
        assert json.loads((tmp_path / "s.json").read_text())["listen"] == [url]
    finally:
        proc.terminate()
        proc.wait(10)


def test_request_without_api_key_is_logged_without_account(gw):
    n = len(gw.lines())
    r = httpx.post(gw.url + "/v1/messages", json={"model": "m", "max_tokens": 2,
                                                  "messages": [{"role": "user", "content": "x"}]})
    rec = last_line(gw, n)
    assert r.status_code == 200  # the upstream decides about authentication
    assert (rec["account"], rec["action"], rec["status"]) == (None, "allow", 200)


def test_chunked_body_over_mitmproxy_limit_is_refused_and_logged(gw, stub):
    """No content-length: mitmproxy's hard cap (the largest of 2 x max_body_bytes,
    max_batch_body_bytes and max_upload_bytes: here 2 x max_body_bytes) stops buffering; the
    request never reaches the upstream and still gets its decision line."""
    n = len(gw.lines())
    before = stub.stats().get("/v1/messages", 0)

    def chunks():
        for _ in range(40):
            yield b"x" * 8192

    try:
        r = httpx.post(gw.url + "/v1/messages", content=chunks(), headers={"x-api-key": "k"})
        status = r.status_code
    except httpx.HTTPError:
        status = None
    assert status in (None, 413)  # mitmproxy's own 413 page (no provider format this early)
    rec = last_line(gw, n)
    assert (rec["path"], rec["action"], rec["rule"], rec["upstream_status"]) == (
        "/v1/messages", "deny", "body_too_large", None)
    assert rec["error"] == "Request body exceeds mitmproxy's body_size_limit."
    assert stub.stats().get("/v1/messages", 0) == before
