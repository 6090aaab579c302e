"""A stand-in model API upstream (Anthropic Messages, OpenAI Chat Completions and Responses).

Stdlib only: HTTP/1.1 with keep-alive on a ``ThreadingHTTPServer``. JSON and SSE replies parse
with the official SDKs. Run ``python -m hydraguard.stub_upstream --port 0 --port-file PATH``, or
``server, port = start_stub()`` and later ``server.shutdown()``.

Deterministic usage:
- input tokens = ``max(1, chars // 4)`` where ``chars`` is the total length of every string
  value found (at any depth) under the keys ``system``, ``instructions``, ``content``, ``text``
  and ``input``;
- output tokens = ``x-stub-output-tokens`` header (default 64), lowered to the request's
  ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` when that is smaller (then
  the stop reason is ``max_tokens`` / ``length`` / Responses status ``incomplete``);
- the text is ``"tok tok tok ..."``: one word per token, one SSE delta per token.

Test knobs (request headers): ``x-stub-output-tokens: N``; ``x-stub-delay-ms: N`` (sleep before
every SSE event but the first, or once before a JSON reply); ``x-stub-cut-after: K`` (send K SSE
events then drop the connection: no terminator, no final chunk); ``x-stub-error-after: K``
(send K events then a provider-format mid-stream error and end the body cleanly);
``x-stub-status: N`` (reply N with a provider-format error body).

Introspection: ``GET /__stub/stats`` (requests per path), ``GET /__stub/last?path=/v1/...``
(headers and JSON body of the last request to that path), ``POST /__stub/reset``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_OUTPUT_TOKENS = 64
TEXT_KEYS = frozenset({"system", "instructions", "content", "text", "input"})
MESSAGES, CHAT, RESPONSES = "/v1/messages", "/v1/chat/completions", "/v1/responses"
COUNT_TOKENS = "/v1/messages/count_tokens"
MODELS = ("stub-model", "claude-stub", "gpt-stub")

# ---------------------------------------------------------------------------------------------
# Deterministic content


def _chars(v: Any, counted: bool = False) -> int:
    if isinstance(v, str):
        return len(v) if counted else 0
    if isinstance(v, dict):
        return sum(_chars(x, k in TEXT_KEYS) for k, x in v.items())
    if isinstance(v, list):
        return sum(_chars(x, counted) for x in v)
    return 0


def input_tokens_for(body: Any) -> int:
    """The stub's input token count for a request body (see the module docstring)."""
    try:
        return max(1, _chars(body) // 4)
    except RecursionError:
        return 1


def _as_count(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return max(v, 0)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    return None


def output_tokens_for(body: Any, header: str | None) -> tuple[int, bool]:
    """``(output tokens, truncated by the request's cap)``."""
    wanted = _as_count(header)
    wanted = DEFAULT_OUTPUT_TOKENS if wanted is None else wanted
    cap = None
    if isinstance(body, dict):
        for f in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            c = _as_count(body.get(f))
            if c is not None:
                cap = c if cap is None else min(cap, c)
    if cap is not None and cap < wanted:
        return cap, True
    return wanted, False


def text_deltas(n: int) -> list[str]:
    """The ``n`` text deltas of a reply: ``["tok", " tok", ...]``."""
    return ["tok" if i == 0 else " tok" for i in range(n)]


def sse(event: str | None, data: Any) -> bytes:
    """One SSE event; ``data`` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


# Anthropic Messages --------------------------------------------------------------------------


def anthropic_usage(n_in: int, n_out: int) -> dict[str, Any]:
    return {
        "input_tokens": n_in,
        "output_tokens": n_out,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def anthropic_message(
    model: str, n_in: int, n_out: int, truncated: bool = False, msg_id: str = "msg_stub"
) -> dict[str, Any]:
    """A non-streamed Messages reply."""
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(text_deltas(n_out))}],
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(n_in, n_out),
    }


def anthropic_events(
    model: str, n_in: int, n_out: int, truncated: bool = False, msg_id: str = "msg_stub"
) -> list[bytes]:
    """SSE events of a streamed Messages reply; two cumulative message_deltas if n_out > 8."""
    start = anthropic_message(model, n_in, 1, truncated, msg_id)
    start.update(content=[], stop_reason=None)
    ev = [
        sse("message_start", {"type": "message_start", "message": start}),
        sse("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""},
        }),
        sse("ping", {"type": "ping"}),
    ]
    ev += [
        sse("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": t},
        })
        for t in text_deltas(n_out)
    ]
    ev.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if n_out > 8:
        ev.append(sse("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": None, "stop_sequence": None},
            "usage": {"output_tokens": n_out // 2},
        }))
    ev.append(sse("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens" if truncated else "end_turn", "stop_sequence": None},
        "usage": anthropic_usage(n_in, n_out),
    }))
    ev.append(sse("message_stop", {"type": "message_stop"}))
    return ev


# OpenAI Chat Completions ---------------------------------------------------------------------


def chat_usage(n_in: int, n_out: int) -> dict[str, Any]:
    return {
        "prompt_tokens": n_in,
        "completion_tokens": n_out,
        "total_tokens": n_in + n_out,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    model: str, n_in: int, n_out: int, truncated: bool = False,
    cid: str = "chatcmpl-stub", created: int = 0,
) -> dict[str, Any]:
    """A non-streamed chat completion."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant", "content": "".join(text_deltas(n_out)), "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "length" if truncated else "stop",
        }],
        "usage": chat_usage(n_in, n_out),
        "system_fingerprint": "fp_stub",
    }


def chat_events(
    model: str, n_in: int, n_out: int, include_usage: bool, truncated: bool = False,
    cid: str = "chatcmpl-stub", created: int = 0,
) -> list[bytes]:
    """SSE events of a streamed chat completion (usage chunk only if ``include_usage``)."""

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        c: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_stub",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return sse(None, c)

    ev = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    ev += [chunk({"content": t}, None) for t in text_deltas(n_out)]
    ev.append(chunk({}, "length" if truncated else "stop"))
    if include_usage:
        ev.append(sse(None, {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_stub", "choices": [], "usage": chat_usage(n_in, n_out),
        }))
    ev.append(b"data: [DONE]\n\n")
    return ev


# OpenAI Responses ----------------------------------------------------------------------------


def responses_usage(n_in: int, n_out: int) -> dict[str, Any]:
    return {
        "input_tokens": n_in,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": n_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": n_in + n_out,
    }


def _output_item(n_out: int, item_id: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id, "type": "message", "status": status, "role": "assistant",
        "content": [{
            "type": "output_text", "text": "".join(text_deltas(n_out)),
            "annotations": [], "logprobs": [],
        }],
    }


def response_object(
    model: str, n_in: int, n_out: int, truncated: bool = False,
    rid: str = "resp_stub", created: int = 0,
) -> dict[str, Any]:
    """A finished Responses object (status ``incomplete`` when cut by max_output_tokens)."""
    return {
        "id": rid, "object": "response", "created_at": created,
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "error": None, "instructions": None, "metadata": {}, "model": model,
        "output": [_output_item(n_out, "msg_" + rid)],
        "parallel_tool_calls": True, "temperature": 1.0, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "text": {"format": {"type": "text"}}, "truncation": "disabled",
        "usage": responses_usage(n_in, n_out),
    }


def responses_events(
    model: str, n_in: int, n_out: int, truncated: bool = False,
    rid: str = "resp_stub", created: int = 0,
) -> list[bytes]:
    """SSE events of a streamed Responses reply, ending in response.completed/incomplete."""
    final = response_object(model, n_in, n_out, truncated, rid, created)
    early = {**final, "status": "in_progress", "incomplete_details": None, "output": [],
             "usage": None}
    item_id = "msg_" + rid
    item = final["output"][0]
    part = item["content"][0]
    seq = iter(range(1 << 30))

    def ev(etype: str, **fields: Any) -> bytes:
        return sse(etype, {"type": etype, "sequence_number": next(seq), **fields})

    loc = {"item_id": item_id, "output_index": 0, "content_index": 0}
    out = [
        ev("response.created", response=early),
        ev("response.in_progress", response=early),
        ev("response.output_item.added", output_index=0,
           item={**item, "status": "in_progress", "content": []}),
        ev("response.content_part.added", **loc, part={**part, "text": ""}),
    ]
    out += [ev("response.output_text.delta", **loc, delta=t, logprobs=[])
            for t in text_deltas(n_out)]
    out += [
        ev("response.output_text.done", **loc, text=part["text"], logprobs=[]),
        ev("response.content_part.done", **loc, part=part),
        ev("response.output_item.done", output_index=0, item=item),
        ev("response.incomplete" if truncated else "response.completed", response=final),
    ]
    return out


# Errors --------------------------------------------------------------------------------------

_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}
_OPENAI_TYPES = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", None), 404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_body(anthropic: bool, status: int, message: str, request_id: str) -> dict[str, Any]:
    """A provider-format error body for ``status``."""
    if anthropic:
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        etype = _ANTHROPIC_TYPES.get(status, fallback)
        return {"type": "error", "error": {"type": etype, "message": message},
                "request_id": request_id}
    etype, code = _OPENAI_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _stream_error(path: str, request_id: str) -> bytes:
    if path == MESSAGES:
        return sse("error", error_body(True, 529, "Overloaded", request_id))
    if path == RESPONSES:
        return sse("error", {"type": "error", "code": "server_error", "message": "stub failure",
                             "param": None, "sequence_number": 0})
    return sse(None, error_body(False, 500, "stub failure", request_id))


# ---------------------------------------------------------------------------------------------
# Server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "hydraguard-stub/1"
    sys_version = ""
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing -------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _is_anthropic(self, path: str) -> bool:
        if path.startswith(MESSAGES):
            return True
        if path.startswith(("/v1/chat/", RESPONSES)):
            return False
        return bool(self.headers.get("anthropic-version") or self.headers.get("x-api-key"))

    def _error(self, path: str, status: int, message: str, rid: str) -> None:
        anthropic = self._is_anthropic(path)
        self._json(status, error_body(anthropic, status, message, rid),
                   {"request-id" if anthropic else "x-request-id": rid})

    # -- routes ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        srv = self.server
        if url.path == "/__stub/stats":
            with srv.lock:
                self._json(200, dict(srv.stats))
            return
        if url.path == "/__stub/last":
            want = (parse_qs(url.query).get("path") or [""])[0]
            with srv.lock:
                rec = srv.last.get(want)
            if rec is None:
                self._json(404, {"error": f"no request seen for {want!r}"})
            else:
                self._json(200, rec)
            return
        rid = srv.next_id()
        srv.record(url.path, dict(self.headers.items()), None)
        if url.path == "/v1/models":
            if self._is_anthropic(url.path):
                data = [{"type": "model", "id": m, "display_name": m,
                         "created_at": "2025-01-01T00:00:00Z"} for m in MODELS]
                self._json(200, {"data": data, "has_more": False, "first_id": MODELS[0],
                                 "last_id": MODELS[-1]}, {"request-id": rid})
            else:
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "stub"}
                        for m in MODELS]
                self._json(200, {"object": "list", "data": data}, {"x-request-id": rid})
            return
        self._error(url.path, 404, f"Not found: {url.path}", rid)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        srv = self.server
        if path == "/__stub/reset":
            self._read_body()
            srv.reset()
            self._json(200, {"ok": True})
            return
        raw = self._read_body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        srv.record(path, dict(self.headers.items()), body)
        rid = srv.next_id()
        h = self.headers
        status = _as_count(h.get("x-stub-status"))
        if status is not None and status != 200 and 100 <= status <= 599:
            self._error(path, status, f"stub error {status}", rid)
            return
        if path not in (MESSAGES, CHAT, RESPONSES, COUNT_TOKENS):
            self._error(path, 404, f"Not found: {path}", rid)
            return
        if not isinstance(body, dict):
            self._error(path, 400, "body must be a JSON object", rid)
            return
        n_in = input_tokens_for(body)
        if path == COUNT_TOKENS:
            self._json(200, {"input_tokens": n_in}, {"request-id": rid})
            return
        n_out, truncated = output_tokens_for(body, h.get("x-stub-output-tokens"))
        model = body.get("model") if isinstance(body.get("model"), str) else "stub-model"
        created = int(time.time())
        delay = (_as_count(h.get("x-stub-delay-ms")) or 0) / 1000
        rid_header = {"request-id" if path == MESSAGES else "x-request-id": rid}
        if body.get("stream") is not True:
            if delay:
                time.sleep(delay)
            if path == MESSAGES:
                obj = anthropic_message(model, n_in, n_out, truncated, "msg_" + rid)
            elif path == CHAT:
                obj = chat_completion(model, n_in, n_out, truncated, "chatcmpl-" + rid, created)
            else:
                obj = response_object(model, n_in, n_out, truncated, "resp_" + rid, created)
            self._json(200, obj, rid_header)
            return
        if path == MESSAGES:
            events = anthropic_events(model, n_in, n_out, truncated, "msg_" + rid)
        elif path == CHAT:
            opts = body.get("stream_options")
            inc = isinstance(opts, dict) and opts.get("include_usage") is True
            events = chat_events(model, n_in, n_out, inc, truncated, "chatcmpl-" + rid, created)
        else:
            events = responses_events(model, n_in, n_out, truncated, "resp_" + rid, created)
        cut = _as_count(h.get("x-stub-cut-after"))
        err = _as_count(h.get("x-stub-error-after"))
        if err is not None and err < len(events):
            events = [*events[:err], _stream_error(path, rid)]
        self._stream(events, delay, cut, rid_header)

    def _stream(
        self, events: list[bytes], delay: float, cut: int | None, headers: dict[str, str]
    ) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        w = self.wfile
        for i, e in enumerate(events):
            if cut is not None and i >= cut:
                self._abort()
                return
            if delay and i:
                time.sleep(delay)
            w.write(b"%x\r\n%s\r\n" % (len(e), e))
        w.write(b"0\r\n\r\n")

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)


class StubServer(ThreadingHTTPServer):
    """The stub upstream; ``shutdown()`` stops it, closes open connections and the socket."""

    daemon_threads = True
    request_queue_size = 256  # benchmarks open many upstream connections at once
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.last: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._conns: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def port(self) -> int:
        return self.server_address[1]

    def next_id(self) -> str:
        with self.lock:
            self._seq += 1
            return f"stub{self._seq:06d}"

    def record(self, path: str, headers: dict[str, str], body: Any) -> None:
        with self.lock:
            self.stats[path] += 1
            self.last[path] = {"headers": {k.lower(): v for k, v in headers.items()},
                               "body": body}

    def reset(self) -> None:
        with self.lock:
            self.stats.clear()
            self.last.clear()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-reply are normal here; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            super().shutdown()
            self._thread.join(5)
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self.server_close()


def start_stub(host: str = "127.0.0.1", port: int = 0) -> tuple[StubServer, int]:
    """Start the stub in a daemon thread; returns ``(server, bound port)``."""
    server = StubServer((host, port))
    t = threading.Thread(target=server.serve_forever, name="stub-upstream", daemon=True)
    server._thread = t
    t.start()
    return server, server.port


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port to this file")
    args = ap.parse_args(argv)
    server = StubServer((args.host, args.port))
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{server.port}\n")
        os.replace(tmp, args.port_file)
    print(server.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
