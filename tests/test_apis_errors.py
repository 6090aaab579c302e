"""error_response / ratelimit_headers, and what the official SDKs make of them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest

from hydraguard.apis import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    RateLimitInfo,
    error_response,
    ratelimit_headers,
)
from hydraguard.apis.errors import go_duration, rfc3339

MSG = 'Budget "cluster-7" exhausted: 1,000,000 tokens/h — try later'


@pytest.mark.parametrize(
    ("kind", "status", "etype"),
    [
        ("permission", 403, "permission_error"),
        ("region", 403, "permission_error"),
        ("rate_limit", 429, "rate_limit_error"),
        ("invalid_request", 400, "invalid_request_error"),
        ("too_large", 413, "request_too_large"),
        ("unavailable", 529, "overloaded_error"),
        ("upstream", 502, "api_error"),
        ("upstream_timeout", 504, "timeout_error"),
        ("something-else", 500, "api_error"),
    ],
)
def test_anthropic_shape(kind: str, status: int, etype: str) -> None:
    st, body, headers = error_response(ANTHROPIC_MESSAGES, "anthropic", kind, MSG,
                                       request_id="req_abc")
    assert st == status
    assert json.loads(body) == {"type": "error", "error": {"type": etype, "message": MSG},
                                "request_id": "req_abc"}
    assert headers["content-type"] == "application/json"
    assert headers["request-id"] == "req_abc"
    assert "x-request-id" not in headers
    assert ("retry-after" in headers) == (status == 429)


@pytest.mark.parametrize(
    ("kind", "status", "etype", "code"),
    [
        ("permission", 403, "request_forbidden", "access_denied"),
        ("region", 403, "request_forbidden", "unsupported_country_region_territory"),
        ("rate_limit", 429, "tokens", "rate_limit_exceeded"),
        ("invalid_request", 400, "invalid_request_error", None),
        ("too_large", 413, "invalid_request_error", "request_too_large"),
        ("unavailable", 503, "server_error", "service_unavailable"),
        ("upstream", 502, "server_error", "bad_gateway"),
        ("upstream_timeout", 504, "server_error", "gateway_timeout"),
    ],
)
def test_openai_shape(kind: str, status: int, etype: str, code: str | None) -> None:
    st, body, headers = error_response(OPENAI_CHAT, "openai", kind, MSG, request_id="req_1")
    assert st == status
    assert json.loads(body) == {"error": {"message": MSG, "type": etype, "param": None,
                                          "code": code}}
    assert headers["x-request-id"] == "req_1"
    assert "request-id" not in headers


def test_provider_fallback_to_api() -> None:
    _, body, _ = error_response(ANTHROPIC_MESSAGES, "?", "permission", "m", request_id="r")
    assert json.loads(body)["type"] == "error"
    _, body, _ = error_response(None, "?", "permission", "m", request_id="r")
    assert "type" not in json.loads(body)


@pytest.mark.parametrize(
    ("retry_after", "reset", "value"),
    [(0.2, None, "1"), (1.0, None, "1"), (1.5, None, "2"), (59.01, None, "60"),
     (None, 30.2, "31"), (None, None, "1"), (0, None, "1"), (-5, None, "1"),
     (float("nan"), None, "31622400"), (float("inf"), None, "31622400"), (7.0, 999.0, "7")],
)
def test_retry_after(retry_after: float | None, reset: float | None, value: str) -> None:
    rl = RateLimitInfo(1000, 0, reset) if reset is not None else None
    for provider in ("anthropic", "openai"):
        _, _, h = error_response(None, provider, "rate_limit", "x", request_id="r",
                                 retry_after=retry_after, ratelimit=rl)
        assert h["retry-after"] == value
        assert ("x-should-retry" in h) == (int(value) > 60)


def test_long_wait_tells_sdks_not_to_retry() -> None:
    _, _, h = error_response(None, "openai", "rate_limit", "x", request_id="r", retry_after=3600)
    assert (h["retry-after"], h["x-should-retry"]) == ("3600", "false")


def test_429_ratelimit_headers() -> None:
    rl = RateLimitInfo(limit=50_000, remaining=0, reset_seconds=360)
    _, _, h = error_response(None, "openai", "rate_limit", "x", request_id="r", ratelimit=rl)
    assert h["x-ratelimit-limit-tokens"] == "50000"
    assert h["x-ratelimit-remaining-tokens"] == "0"
    assert h["x-ratelimit-reset-tokens"] == "6m0s"
    _, _, h = error_response(None, "anthropic", "rate_limit", "x", request_id="r", ratelimit=rl)
    assert h["anthropic-ratelimit-tokens-limit"] == "50000"
    assert h["anthropic-ratelimit-tokens-reset"].endswith("Z")
    _, _, h = error_response(None, "anthropic", "permission", "x", request_id="r", ratelimit=rl)
    assert not any(k.startswith("anthropic-ratelimit") for k in h)


def test_ratelimit_headers() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert ratelimit_headers("anthropic", RateLimitInfo(100, 40, 90.5), now) == {
        "anthropic-ratelimit-tokens-limit": "100",
        "anthropic-ratelimit-tokens-remaining": "40",
        "anthropic-ratelimit-tokens-reset": "2023-11-14T22:14:51Z",
    }
    assert ratelimit_headers("openai", RateLimitInfo(100, -3, 0.25), now) == {
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "250ms",
    }
    weird = ratelimit_headers("anthropic", RateLimitInfo(None, "x", float("nan")), float("nan"))  # type: ignore[arg-type]
    assert weird["anthropic-ratelimit-tokens-limit"] == "0"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0001, "1ms"), (0.25, "250ms"), (0.9999, "1s"), (1, "1s"), (1.5, "1.5s"),
     (59.9, "59.9s"), (60, "1m0s"), (360, "6m0s"), (3723, "1h2m3s"), (7200, "2h0m0s"),
     (-1, "0s"), (float("nan"), "8784h0m0s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1_700_000_000.2) == "2023-11-14T22:13:21Z"
    assert rfc3339(float("nan")) == "1970-01-01T00:00:00Z"
    assert rfc3339(1e300) == "9999-12-31T23:59:59Z"


# -- the official SDKs against error_response output ------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        provider = "anthropic" if self.path.startswith("/v1/messages") else "openai"
        status, body, headers = error_response(
            None, provider, self.headers["x-kind"], self.headers.get("x-msg", MSG),
            request_id="req_sdk_1", retry_after=float(self.headers.get("x-retry", "2")),
            ratelimit=RateLimitInfo(1000, 0, 2.0),
        )
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = _reply
    do_GET = _reply


@pytest.fixture(scope="module")
def deny_url() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


ANTHROPIC_CASES = [
    ("permission", anthropic.PermissionDeniedError),
    ("region", anthropic.PermissionDeniedError),
    ("rate_limit", anthropic.RateLimitError),
    ("invalid_request", anthropic.BadRequestError),
    ("too_large", anthropic.APIStatusError),
    ("unavailable", anthropic.InternalServerError),
    ("upstream", anthropic.InternalServerError),
]


@pytest.mark.parametrize(("kind", "exc"), ANTHROPIC_CASES)
def test_anthropic_sdk(deny_url: str, kind: str, exc: type[Exception]) -> None:
    client = anthropic.Anthropic(base_url=deny_url, api_key="k", max_retries=0)
    with pytest.raises(exc) as ei:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                               extra_headers={"x-kind": kind})
    e = ei.value
    assert isinstance(e, anthropic.APIStatusError)
    assert e.body["error"]["message"] == MSG  # type: ignore[index]
    assert e.request_id == "req_sdk_1"
    assert "exhausted: 1,000,000 tokens/h" in str(e)


def test_anthropic_sdk_specific_classes(deny_url: str) -> None:
    client = anthropic.Anthropic(base_url=deny_url, api_key="k", max_retries=0)
    for kind, status in (("unavailable", 529), ("rate_limit", 429)):
        with pytest.raises(anthropic.APIStatusError) as ei:
            client.messages.create(model="m", max_tokens=5, messages=[],
                                   extra_headers={"x-kind": kind})
        assert ei.value.status_code == status
    if hasattr(anthropic, "OverloadedError"):
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(model="m", max_tokens=5, messages=[],
                                   extra_headers={"x-kind": "unavailable"})


def test_anthropic_sdk_streaming_denied(deny_url: str) -> None:
    client = anthropic.Anthropic(base_url=deny_url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as ei:  # noqa: SIM117
        with client.messages.stream(model="m", max_tokens=5, messages=[],
                                    extra_headers={"x-kind": "rate_limit"}) as s:
            list(s)
    assert ei.value.response.headers["retry-after"] == "2"
    assert ei.value.response.headers["anthropic-ratelimit-tokens-remaining"] == "0"


OPENAI_CASES = [
    ("permission", openai.PermissionDeniedError),
    ("region", openai.PermissionDeniedError),
    ("rate_limit", openai.RateLimitError),
    ("invalid_request", openai.BadRequestError),
    ("too_large", openai.APIStatusError),
    ("unavailable", openai.InternalServerError),
    ("upstream", openai.InternalServerError),
]


@pytest.mark.parametrize(("kind", "exc"), OPENAI_CASES)
def test_openai_sdk(deny_url: str, kind: str, exc: type[Exception]) -> None:
    client = openai.OpenAI(base_url=deny_url + "/v1", api_key="k", max_retries=0)
    for call in (
        lambda: client.chat.completions.create(model="m", messages=[],
                                               extra_headers={"x-kind": kind}),
        lambda: client.responses.create(model="m", input="x", stream=True,
                                        extra_headers={"x-kind": kind}),
    ):
        with pytest.raises(exc) as ei:
            call()
        e = ei.value
        assert isinstance(e, openai.APIStatusError)
        assert e.message.endswith(MSG)
        assert e.request_id == "req_sdk_1"
        assert isinstance(e.body, dict) and e.body["message"] == MSG


def test_openai_sdk_region_code(deny_url: str) -> None:
    client = openai.OpenAI(base_url=deny_url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as ei:
        client.chat.completions.create(model="m", messages=[], extra_headers={
            "x-kind": "region", "x-msg": "Country, region, or territory not supported"})
    assert ei.value.code == "unsupported_country_region_territory"
    assert ei.value.type == "request_forbidden"
    assert ei.value.message == "Error code: 403 - Country, region, or territory not supported"


def test_openai_sdk_retries_honour_retry_after(deny_url: str) -> None:
    """With retries on, the SDK waits retry-after (1 s here) and asks again, then gives up."""
    import time

    client = openai.OpenAI(base_url=deny_url + "/v1", api_key="k", max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=[],
                                       extra_headers={"x-kind": "rate_limit", "x-retry": "0.5"})
    assert 0.9 < time.monotonic() - t0 < 5
