"""Batches, files and the older endpoints of the stand-in upstream (stdlib only).

Anthropic Message Batches (``/v1/messages/batches``: create, retrieve, list, cancel, results)
and the OpenAI Batch API (``/v1/files`` multipart upload, ``/v1/files/{id}[/content]``,
``/v1/batches``: create, retrieve, list, cancel); legacy completions, Text Completions,
embeddings and ``/v1/responses/input_tokens``. Deterministic usage per request, as for a
single call (``hydraguard_dev.upstream``).

Knobs on the create request: ``x-stub-output-tokens: N`` (every request), ``x-stub-batch-
complete: K`` (only the first K requests finish; the batch stays in progress until it is
cancelled, then ends with the others cancelled). Without it every request finishes and the
batch has ended by its first retrieve. Anthropic's ``results_url`` names the host the stub
was reached at, as the real API names its own.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .anthropic_format import anthropic_message
from .content import as_count, input_tokens_for, output_tokens_for
from .legacy_format import (
    choices_of,
    complete,
    complete_events,
    completion,
    completion_events,
    embeddings,
    prompts_of,
)
from .openai_format import chat_completion, response_object

_ID = r"([A-Za-z0-9_-]+)"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Batch:
    id: str
    provider: str
    items: list[tuple[str, str, dict[str, Any]]]  # (custom_id, url, body)
    complete: int
    out_header: str | None
    created: float
    endpoint: str = ""
    input_file_id: str = ""
    cancelled: bool = False
    output_file_id: str | None = None


@dataclass
class Store:
    """The stub's batches and files (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    batches: dict[str, _Batch] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def store_of(server: Any) -> Store:
    with server.lock:
        if getattr(server, "batch_store", None) is None:
            server.batch_store = Store()
        return server.batch_store


def _result_body(url: str, body: dict[str, Any], out_header: str | None, rid: str
                 ) -> dict[str, Any]:
    """The response body of one batch request, as the single call would get it."""
    n_in = input_tokens_for(body)
    model = body.get("model") if isinstance(body.get("model"), str) else "stub-model"
    if url == "/v1/embeddings":
        inputs = body.get("input")
        return embeddings(model, n_in, len(inputs) if isinstance(inputs, list) else 1)
    n_out, trunc = output_tokens_for(body, out_header)
    if url == "/v1/messages":
        return anthropic_message(model, n_in, n_out, trunc, "msg_" + rid)
    if url == "/v1/responses":
        return response_object(model, n_in, n_out, trunc, "resp_" + rid, 0)
    if url == "/v1/completions":
        return completion(model, n_in, n_out, prompts_of(body) * choices_of(body), trunc,
                          "cmpl-" + rid, 0)
    return chat_completion(model, n_in, n_out, trunc, "chatcmpl-" + rid, 0)


def _ended(b: _Batch) -> bool:
    return b.cancelled or b.complete >= len(b.items)


def _done(b: _Batch) -> int:
    return min(b.complete, len(b.items))


def anthropic_object(b: _Batch, host: str, canceling: bool = False) -> dict[str, Any]:
    n, k = len(b.items), _done(b)
    ended = _ended(b) and not canceling
    return {
        "id": b.id, "type": "message_batch",
        "processing_status": "ended" if ended else ("canceling" if canceling else
                                                    "in_progress"),
        "request_counts": {"processing": 0 if ended else n - k, "succeeded": k,
                           "errored": 0, "canceled": n - k if ended else 0, "expired": 0},
        "created_at": _iso(b.created), "expires_at": _iso(b.created + 86400),
        "ended_at": _iso(time.time()) if ended else None,
        "cancel_initiated_at": _iso(time.time()) if b.cancelled else None,
        "archived_at": None,
        "results_url": f"http://{host}/v1/messages/batches/{b.id}/results" if ended else None,
    }


def openai_object(b: _Batch, canceling: bool = False) -> dict[str, Any]:
    n, k = len(b.items), _done(b)
    ended = _ended(b) and not canceling
    status = "cancelling" if canceling else ("in_progress" if not ended else (
        "cancelled" if b.cancelled else "completed"))
    return {
        "id": b.id, "object": "batch", "endpoint": b.endpoint, "errors": None,
        "input_file_id": b.input_file_id, "completion_window": "24h", "status": status,
        "output_file_id": b.output_file_id if ended else None, "error_file_id": None,
        "created_at": int(b.created), "in_progress_at": int(b.created),
        "expires_at": int(b.created) + 86400, "completed_at": int(time.time()) if ended
        else None, "request_counts": {"total": n, "completed": k, "failed": 0},
        "metadata": None,
    }


def _results(b: _Batch) -> bytes:
    lines = []
    for i, (cid, url, body) in enumerate(b.items):
        rid = f"{b.id}-{i}"
        if b.provider == "anthropic":
            res = {"type": "succeeded", "message": _result_body(url, body, b.out_header, rid)} \
                if i < b.complete else {"type": "canceled"}
            lines.append({"custom_id": cid, "result": res})
        elif i < b.complete:
            lines.append({"id": f"batch_req_{rid}", "custom_id": cid, "error": None,
                          "response": {"status_code": 200, "request_id": rid,
                                       "body": _result_body(url, body, b.out_header, rid)}})
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def _multipart(raw: bytes, content_type: str) -> tuple[dict[str, str], bytes | None, str]:
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if m is None:
        return {}, None, ""
    fields: dict[str, str] = {}
    data, name = None, ""
    for part in raw.split(b"--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part[2:].partition(b"\r\n\r\n")
        value = value[:-2] if value.endswith(b"\r\n") else value
        disp = head.decode("utf-8", "replace")
        fname = re.search(r'filename="([^"]*)"', disp)
        fld = re.search(r'name="([^"]*)"', disp)
        if fname is not None:
            data, name = value, fname.group(1)
        elif fld is not None:
            fields[fld.group(1)] = value.decode("utf-8", "replace")
    return fields, data, name


def handle(h: Any, method: str, path: str, raw: bytes) -> bool:
    """Answer a batch / file / legacy request; False when the path is none of these."""
    st = store_of(h.server)
    if method == "POST" and path in ("/v1/completions", "/v1/complete", "/v1/embeddings",
                                     "/v1/responses/input_tokens"):
        return _legacy(h, path, raw)
    if method == "POST" and path == "/v1/files":
        fields, data, name = _multipart(raw, h.headers.get("content-type", ""))
        if data is None:
            h._error(path, 400, "no file part", h.server.next_id())
            return True
        fid = "file-" + h.server.next_id()
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": name, "purpose": fields.get("purpose", ""), "status": "processed"}
        with st.lock:
            st.files[fid] = {**obj, "content": data}
        h._json(200, obj)
        return True
    if method == "GET" and (m := re.fullmatch(rf"/v1/files/{_ID}(/content)?", path)):
        with st.lock:
            f = st.files.get(m.group(1))
        if f is None:
            h._error(path, 404, "no such file", h.server.next_id())
        elif m.group(2):
            h._send(200, f["content"], {"content-type": "application/octet-stream"})
        else:
            h._json(200, {k: v for k, v in f.items() if k != "content"})
        return True
    if path.startswith("/v1/messages/batches"):
        return _anthropic_batches(h, st, method, path, raw)
    if path.startswith("/v1/batches"):
        return _openai_batches(h, st, method, path, raw)
    return False


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _legacy(h: Any, path: str, raw: bytes) -> bool:
    body = _body(raw)
    rid = h.server.next_id()
    if not isinstance(body, dict):
        h._error(path, 400, "body must be a JSON object", rid)
        return True
    n_in = input_tokens_for(body)
    model = body.get("model") if isinstance(body.get("model"), str) else "stub-model"
    if path == "/v1/responses/input_tokens":
        h._json(200, {"object": "response.input_tokens", "input_tokens": n_in})
        return True
    if path == "/v1/embeddings":
        inputs = body.get("input")
        h._json(200, embeddings(model, n_in, len(inputs) if isinstance(inputs, list) else 1))
        return True
    hdr = h.headers.get("x-stub-output-tokens")
    if path == "/v1/complete":
        cap = as_count(body.get("max_tokens_to_sample"))
        n_out, trunc = output_tokens_for({}, hdr)
        if cap is not None and cap < n_out:
            n_out, trunc = cap, True
        if body.get("stream") is True:
            h._stream(complete_events(model, n_out, trunc, "compl_" + rid), 0, None,
                      {"request-id": rid})
        else:
            h._json(200, complete(model, n_out, trunc, "compl_" + rid), {"request-id": rid})
        return True
    n_out, trunc = output_tokens_for(body, hdr)
    choices = prompts_of(body) * choices_of(body)
    if body.get("stream") is True:
        opts = body.get("stream_options")
        inc = isinstance(opts, dict) and opts.get("include_usage") is True
        h._stream(completion_events(model, n_in, n_out, choices, inc, trunc, "cmpl-" + rid,
                                    int(time.time())), 0, None, {"x-request-id": rid})
    else:
        h._json(200, completion(model, n_in, n_out, choices, trunc, "cmpl-" + rid,
                                int(time.time())), {"x-request-id": rid})
    return True


def _anthropic_batches(h: Any, st: Store, method: str, path: str, raw: bytes) -> bool:
    host = h.headers.get("host", "127.0.0.1")
    rid = h.server.next_id()
    if method == "POST" and path == "/v1/messages/batches":
        body = _body(raw)
        reqs = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(reqs, list) or not reqs or not all(
                isinstance(r, dict) and isinstance(r.get("params"), dict) for r in reqs):
            h._error(path, 400, "requests must be a non-empty list of {custom_id, params}", rid)
            return True
        n = len(reqs)
        done = h.headers.get("x-stub-batch-complete")
        b = _Batch("msgbatch_" + rid, "anthropic",
                   [(str(r.get("custom_id")), "/v1/messages", r["params"]) for r in reqs],
                   n if done is None else as_count(done) or 0,
                   h.headers.get("x-stub-output-tokens"), time.time())
        with st.lock:
            st.batches[b.id] = b
        obj = anthropic_object(b, host)
        obj.update(processing_status="in_progress", ended_at=None, results_url=None,
                   request_counts={**obj["request_counts"], "processing": n, "succeeded": 0,
                                   "canceled": 0})
        h._json(200, obj, {"request-id": rid})
        return True
    if method == "GET" and path == "/v1/messages/batches":
        with st.lock:
            data = [anthropic_object(b, host) for b in st.batches.values()
                    if b.provider == "anthropic"]
        h._json(200, {"data": data, "has_more": False, "first_id": None, "last_id": None})
        return True
    m = re.fullmatch(rf"/v1/messages/batches/{_ID}(/cancel|/results)?", path)
    with st.lock:
        b = st.batches.get(m.group(1)) if m else None
    if b is None or m is None:
        h._error(path, 404, "no such batch", rid)
        return True
    if m.group(2) == "/cancel" and method == "POST":
        was = _ended(b)
        b.cancelled = True
        h._json(200, anthropic_object(b, host, canceling=not was), {"request-id": rid})
    elif m.group(2) == "/results" and method == "GET":
        if not _ended(b):
            h._error(path, 400, "batch is still processing", rid)
        else:
            h._send(200, _results(b), {"content-type": "application/binary"})
    else:
        h._json(200, anthropic_object(b, host), {"request-id": rid})
    return True


def _openai_batches(h: Any, st: Store, method: str, path: str, raw: bytes) -> bool:
    rid = h.server.next_id()
    if method == "POST" and path == "/v1/batches":
        body = _body(raw) or {}
        with st.lock:
            f = st.files.get(str(body.get("input_file_id")))
        if f is None:
            h._error(path, 400, "input_file_id: no such file", rid)
            return True
        items = []
        for line in f["content"].splitlines():
            if line.strip():
                o = json.loads(line)
                items.append((str(o.get("custom_id")), str(o.get("url")), o.get("body") or {}))
        n = len(items)
        done = h.headers.get("x-stub-batch-complete")
        b = _Batch("batch_" + rid, "openai", items, n if done is None else as_count(done) or 0,
                   h.headers.get("x-stub-output-tokens"), time.time(),
                   endpoint=str(body.get("endpoint")), input_file_id=f["id"])
        with st.lock:
            st.batches[b.id] = b
        obj = openai_object(b)
        obj.update(status="validating", output_file_id=None, completed_at=None,
                   request_counts={"total": 0, "completed": 0, "failed": 0})
        h._json(200, obj, {"x-request-id": rid})
        return True
    if method == "GET" and path == "/v1/batches":
        with st.lock:
            data = [openai_object(_finish(st, b)) for b in st.batches.values()
                    if b.provider == "openai"]
        h._json(200, {"object": "list", "data": data, "has_more": False})
        return True
    m = re.fullmatch(rf"/v1/batches/{_ID}(/cancel)?", path)
    with st.lock:
        b = st.batches.get(m.group(1)) if m else None
    if b is None or m is None:
        h._error(path, 404, "no such batch", rid)
        return True
    if m.group(2) and method == "POST":
        was = _ended(b)
        b.cancelled = True
        h._json(200, openai_object(b, canceling=not was), {"x-request-id": rid})
        return True
    with st.lock:
        _finish(st, b)
    h._json(200, openai_object(b), {"x-request-id": rid})
    return True


def _finish(st: Store, b: _Batch) -> _Batch:
    """An ended OpenAI batch gets its output file (called with the lock held)."""
    if _ended(b) and b.output_file_id is None:
        fid = f"file-out-{b.id}"
        data = _results(b)
        st.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at":
                         int(time.time()), "filename": "batch_output.jsonl",
                         "purpose": "batch_output", "status": "processed", "content": data}
        b.output_file_id = fid
    return b
