"""apis/routes.py: which endpoint a request targets, and path tricks that must not open the
unmetered door (a POST that dodges a known route lands in `unknown`, which is refused)."""

from __future__ import annotations

import fnmatch

import pytest

from hydraguard.apis import routes
from hydraguard.apis.routes import Route, clean_path, provider_for_request, route_of
from hydraguard.policy.catalogue import HARMLESS_POSTS
from hydraguard.policy.conditions import API_NAMES


def no_headers(_: str) -> None:
    return None


def harmless(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in HARMLESS_POSTS)


def r(method: str, path: str, headers=no_headers) -> Route:
    return route_of(method, path, headers, harmless)


@pytest.mark.parametrize(("method", "path", "want"), [
    ("POST", "/v1/messages", Route("model", "anthropic.messages")),
    ("POST", "/v1/messages?beta=true", Route("model", "anthropic.messages")),
    ("POST", "/v1/completions", Route("model", "openai.completions")),
    ("POST", "/v1/complete", Route("model", "anthropic.complete")),
    ("POST", "/v1/embeddings/", Route("model", "openai.embeddings")),
    ("POST", "/v1/messages/batches", Route("batch", "anthropic.batches")),
    ("POST", "/v1/messages/batches?beta=true", Route("batch", "anthropic.batches")),
    ("POST", "/v1/batches", Route("batch", "openai.batches")),
    ("POST", "/v1/files", Route("upload")),
    ("GET", "/v1/messages/batches/msgbatch_01/results", Route("results", None, "msgbatch_01")),
    ("GET", "/v1/files/file-abc/content", Route("file_content", None, "file-abc")),
    ("GET", "/v1/messages/batches/msgbatch_01", Route("batch_object", None, "msgbatch_01")),
    ("POST", "/v1/messages/batches/msgbatch_01/cancel",
     Route("batch_object", None, "msgbatch_01")),
    ("GET", "/v1/messages/batches", Route("batch_object")),
    ("GET", "/v1/batches/batch_1", Route("batch_object", None, "batch_1")),
    ("POST", "/v1/batches/batch_1/cancel", Route("batch_object", None, "batch_1")),
    ("GET", "/v1/batches", Route("batch_object")),
    ("GET", "/v1/models", Route("read")),
    ("DELETE", "/v1/files/file-abc", Route("read")),
    ("HEAD", "/v1/messages", Route("read")),
    ("POST", "/v1/messages/count_tokens", Route("harmless")),
    ("POST", "/v1/responses/input_tokens", Route("harmless")),
    ("POST", "/v1/responses/resp_1/cancel", Route("harmless")),
    ("POST", "/v1/uploads/upl_1/parts", Route("harmless")),
    # spending endpoints the proxy does not meter: refused
    ("POST", "/v1/images/generations", Route("unknown")),
    ("POST", "/v1/audio/speech", Route("unknown")),
    ("POST", "/v1/fine_tuning/jobs", Route("unknown")),
    ("POST", "/v1/threads/thread_1/runs", Route("unknown")),
    ("POST", "/v1/realtime/calls", Route("unknown")),
    ("POST", "/v1/sessions/s1/events", Route("unknown")),
    ("POST", "/v1/messages/batches/msgbatch_01", Route("unknown")),  # POST to a batch: no
    ("PUT", "/v1/messages", Route("unknown")),
    ("TRACE", "/v1/models", Route("unknown")),
    # path tricks: never a known endpoint, never harmless
    ("POST", "/v1//messages", Route("unknown")),
    ("POST", "/v1/messages/./", Route("unknown")),
    ("POST", "/v1/messages/count_tokens/../../messages", Route("unknown")),
    ("POST", "/v1/responses/x/..%2f..%2fresponses/cancel", Route("unknown")),
    ("POST", "/v1/messages%2Fcount_tokens", Route("unknown")),
    ("POST", "/V1/MESSAGES", Route("unknown")),
    ("GET", "/v1/messages/batches/../x/results", Route("read")),
])
def test_routes(method: str, path: str, want: Route) -> None:
    assert r(method, path) == want


def test_upgrades_are_their_own_route_whatever_the_path() -> None:
    ws = {"upgrade": "websocket"}.get
    assert r("GET", "/v1/realtime?model=gpt-realtime", ws) == Route("upgrade")
    assert r("GET", "/v1/responses", ws) == Route("upgrade")
    assert r("CONNECT", "/v1/realtime") == Route("upgrade")
    assert r("GET", "/v1/realtime") == Route("read")  # a plain GET spends nothing


def test_without_a_harmless_test_every_unrouted_post_is_unknown() -> None:
    assert route_of("POST", "/v1/messages/count_tokens", no_headers) == Route("unknown")


def test_clean_path() -> None:
    assert clean_path("/v1/messages/batches/msgbatch_01/cancel")
    for bad in ("v1/messages", "/v1//x", "/v1/./x", "/v1/..", "/v1/%2e%2e", "/v1\\x",
                "/v1/x y"):
        assert not clean_path(bad), bad


def test_provider_for_request_reads_anthropic_headers_from_any_iterable() -> None:
    assert provider_for_request("/v1/files", ["anthropic-version"]) == "anthropic"
    assert provider_for_request("/v1/files", frozenset({"authorization"})) == "openai"
    assert routes.provider_of("anthropic.batches") == "anthropic"
    assert routes.provider_of("anthropic.complete") == "anthropic"
    assert routes.provider_of("openai.batches") == "openai"


def test_rules_know_every_api() -> None:
    """`when: {api: ...}` (policy/, which imports no runtime module) lists the same APIs."""
    assert set(API_NAMES) == set(routes.ALL_APIS)
