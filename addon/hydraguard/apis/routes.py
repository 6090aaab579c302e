"""Which endpoint a request targets, and what the proxy does with it (pure, no I/O).

Every request gets a `Route`. Its `kind` says how the proxy treats it:

=============  =====================================================================================
kind           requests
=============  =====================================================================================
model          POST to a model endpoint (``api`` set): parsed, estimated, metered
batch          a batch submission (``api`` anthropic.batches / openai.batches): the whole batch is
               estimated and charged at submission
upload         POST /v1/files: streamed to the upstream, never buffered; an OpenAI ``purpose=batch``
               file is estimated on the way (its estimate is charged by the batch that uses it)
results        GET /v1/messages/batches/{id}/results: metered as it streams; refunds the batch
file_content   GET /v1/files/{id}/content: when it is a batch's output file, refunds the batch
batch_object   GET / cancel of one batch (or the list): what it says about a batch is recorded
read           GET, HEAD, OPTIONS, DELETE elsewhere: forwarded (spend nothing)
harmless       POST / PUT / PATCH listed in ``settings.harmless_posts``: forwarded
unknown        any other POST / PUT / PATCH (or another method): refused (403) by default
upgrade        a WebSocket (or other protocol) upgrade: cannot be metered, refused unless an
               ``allow`` rule matches it
=============  =====================================================================================

A path is matched exactly (after dropping the query and one trailing slash); a path with dot
segments, empty segments, percent-escapes or backslashes never matches a known endpoint or a
harmless glob, so it is ``unknown`` for POST (refused) and ``read`` for GET.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

ANTHROPIC_MESSAGES = "anthropic.messages"
OPENAI_CHAT = "openai.chat"
OPENAI_RESPONSES = "openai.responses"
OPENAI_COMPLETIONS = "openai.completions"
ANTHROPIC_COMPLETE = "anthropic.complete"
OPENAI_EMBEDDINGS = "openai.embeddings"
ANTHROPIC_BATCHES = "anthropic.batches"
OPENAI_BATCHES = "openai.batches"
APIS = (ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES)
"""The three model APIs of the first releases (``when: {api: ...}`` accepts all of ALL_APIS)."""
LEGACY_APIS = (OPENAI_COMPLETIONS, ANTHROPIC_COMPLETE, OPENAI_EMBEDDINGS)
MODEL_APIS = APIS + LEGACY_APIS
BATCH_APIS = (ANTHROPIC_BATCHES, OPENAI_BATCHES)
ALL_APIS = MODEL_APIS + BATCH_APIS
_ANTHROPIC_APIS = frozenset({ANTHROPIC_MESSAGES, ANTHROPIC_COMPLETE, ANTHROPIC_BATCHES})

MODEL, BATCH, UPLOAD, RESULTS = "model", "batch", "upload", "results"
FILE_CONTENT, BATCH_OBJECT, READ = "file_content", "batch_object", "read"
HARMLESS, UNKNOWN, UPGRADE = "harmless", "unknown", "upgrade"
KINDS = (MODEL, BATCH, UPLOAD, RESULTS, FILE_CONTENT, BATCH_OBJECT, READ, HARMLESS, UNKNOWN,
         UPGRADE)

_PATHS = {
    "/v1/messages": ANTHROPIC_MESSAGES,
    "/v1/chat/completions": OPENAI_CHAT,
    "/v1/responses": OPENAI_RESPONSES,
    "/v1/completions": OPENAI_COMPLETIONS,
    "/v1/complete": ANTHROPIC_COMPLETE,
    "/v1/embeddings": OPENAI_EMBEDDINGS,
    "/v1/messages/batches": ANTHROPIC_BATCHES,
    "/v1/batches": OPENAI_BATCHES,
}
_ANTHROPIC_PREFIXES = ("/v1/messages", "/v1/complete")
_OPENAI_PREFIXES = (
    "/v1/chat/", "/v1/responses", "/v1/completions", "/v1/embeddings", "/v1/audio/",
    "/v1/images/", "/v1/moderations", "/v1/assistants", "/v1/threads", "/v1/realtime",
    "/v1/batches", "/v1/uploads",
)
_ANTHROPIC_HEADERS = frozenset({"x-api-key", "anthropic-version", "anthropic-beta"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ID = r"([A-Za-z0-9_-]{1,128})"
_RESULTS = re.compile(rf"/v1/messages/batches/{_ID}/results")
_FILE_CONTENT = re.compile(rf"/v1/files/{_ID}/content")
_ANTHROPIC_BATCH = re.compile(rf"/v1/messages/batches(?:/{_ID}(/cancel)?)?")
_OPENAI_BATCH = re.compile(rf"/v1/batches(?:/{_ID}(/cancel)?)?")
_UNCLEAN = re.compile(r"//|/\.\.?(?:/|$)|%|\\|[\x00-\x20\x7f]")


class Route(NamedTuple):
    """What a request is (see the module doc): its kind, the API of a model call or batch
    submission, and the id (batch or file) its path names."""

    kind: str
    api: str | None = None
    ident: str | None = None


def strip_path(path: str) -> str:
    """The path without query, fragment and one trailing slash."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


def clean_path(path: str) -> bool:
    """No dot or empty segments, percent-escapes, backslashes or control characters: the path
    means the same to every server that may normalise it."""
    return path.startswith("/") and _UNCLEAN.search(path) is None


def api_for_path(method: str, path: str) -> str | None:
    """The API a request targets: a POST to a model endpoint or a batch submission; else None."""
    if not isinstance(method, str) or not isinstance(path, str) or method.upper() != "POST":
        return None
    return _PATHS.get(strip_path(path))


def route_of(method: str, path: str, headers: Callable[[str], str | None],
             harmless: Callable[[str], bool] | None = None) -> Route:
    """The route of a request (see the module doc). ``headers``: a case-insensitive lookup;
    ``harmless``: the ``settings.harmless_posts`` test of a clean path."""
    m = method.upper() if isinstance(method, str) else ""
    p = strip_path(path) if isinstance(path, str) else ""
    upgrade = headers("upgrade")
    if m == "CONNECT" or (upgrade and upgrade.strip()):
        return Route(UPGRADE)
    if m == "POST":
        api = _PATHS.get(p)
        if api is not None:
            return Route(BATCH if api in BATCH_APIS else MODEL, api)
        if p == "/v1/files":
            return Route(UPLOAD)
    if m in ("GET", "POST"):
        for rx in (_ANTHROPIC_BATCH, _OPENAI_BATCH):
            hit = rx.fullmatch(p)
            if hit is not None and (m == "GET") != bool(hit.group(2)) and (
                    m == "GET" or hit.group(1)):
                return Route(BATCH_OBJECT, None, hit.group(1))
    if m == "GET":
        hit = _RESULTS.fullmatch(p)
        if hit is not None:
            return Route(RESULTS, None, hit.group(1))
        hit = _FILE_CONTENT.fullmatch(p)
        if hit is not None:
            return Route(FILE_CONTENT, None, hit.group(1))
    if m in _SAFE_METHODS:
        return Route(READ)
    if m in _WRITE_METHODS and harmless is not None and clean_path(p) and harmless(p):
        return Route(HARMLESS)
    return Route(UNKNOWN)


def provider_of(api: str | None) -> str:
    """Provider of an API: "anthropic" or "openai" (None and unknown give "openai").

    For requests that are not model calls use :func:`provider_for_request`.
    """
    return "anthropic" if api in _ANTHROPIC_APIS else "openai"


def provider_for_request(path: str, headers: Mapping[str, str]) -> str:
    """Guess the provider of any request: path prefix first, then Anthropic-only headers."""
    p = strip_path(path) if isinstance(path, str) else ""
    if p.startswith(_ANTHROPIC_PREFIXES):
        return "anthropic"
    if p.startswith(_OPENAI_PREFIXES):
        return "openai"
    try:
        anthropic = any(str(k).lower() in _ANTHROPIC_HEADERS for k in headers)
    except Exception:  # a broken mapping must not make us raise
        anthropic = False
    return "anthropic" if anthropic else "openai"
