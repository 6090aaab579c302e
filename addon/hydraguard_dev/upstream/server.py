"""The stand-in upstream's HTTP server: routes, test knobs, introspection, SSE streaming, CLI."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .anthropic_format import anthropic_error, anthropic_events, anthropic_message
from .batches import handle as handle_batches
from .content import (
    CHAT,
    COUNT_TOKENS,
    MESSAGES,
    MODELS,
    RESPONSES,
    as_count,
    input_tokens_for,
    output_tokens_for,
    sse,
)
from .openai_format import (
    chat_completion,
    chat_events,
    chat_usage,
    openai_error,
    response_object,
    responses_events,
)

STALL_MAX_S = 120.0  # longest an `x-stub-stall` request is held before the stub gives up
DESCRIPTION = ("A stand-in model API upstream (Anthropic Messages and Message Batches, OpenAI "
               "Chat Completions, Responses, Batch API and files, legacy completions and "
               "embeddings).")


def error_body(anthropic: bool, status: int, message: str, request_id: str) -> dict[str, Any]:
    """A provider-format error body for ``status``."""
    if anthropic:
        return anthropic_error(status, message, request_id)
    return openai_error(status, message)


def _stream_error(path: str, request_id: str) -> bytes:
    if path == MESSAGES:
        return sse("error", error_body(True, 529, "Overloaded", request_id))
    if path == RESPONSES:
        return sse("error", {"type": "error", "code": "server_error", "message": "stub failure",
                             "param": None, "sequence_number": 0})
    return sse(None, error_body(False, 500, "stub failure", request_id))


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
        if handle_batches(self, "GET", url.path.rstrip("/") or "/", b""):
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
        if h.get("x-stub-reset"):
            self._reset()
            return
        status = as_count(h.get("x-stub-status"))
        if status is not None and status != 200 and 100 <= status <= 599:
            self._error(path, status, f"stub error {status}", rid)
            return
        if handle_batches(self, "POST", path, raw):
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
        delay = (as_count(h.get("x-stub-delay-ms")) or 0) / 1000
        rid_header = {"request-id" if path == MESSAGES else "x-request-id": rid}
        stall = as_count(h.get("x-stub-stall"))
        if body.get("stream") is not True:
            if stall is not None:
                self._stall()
                return
            if delay:
                time.sleep(delay)
            if path == MESSAGES:
                obj = anthropic_message(model, n_in, n_out, truncated, "msg_" + rid)
            elif path == CHAT:
                obj = chat_completion(model, n_in, n_out, truncated, "chatcmpl-" + rid, created)
                n = as_count(body.get("n")) or 1
                if n > 1:  # n choices, each billed
                    obj["choices"] = [{**obj["choices"][0], "index": i} for i in range(n)]
                    obj["usage"] = chat_usage(n_in, n_out * n)
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
        cut = as_count(h.get("x-stub-cut-after"))
        err = as_count(h.get("x-stub-error-after"))
        if err is not None and err < len(events):
            events = [*events[:err], _stream_error(path, rid)]
        self._stream(events, delay, cut, rid_header, stall)

    def _stream(self, events: list[bytes], delay: float, cut: int | None,
                headers: dict[str, str], stall: int | None = None) -> None:
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
            if stall is not None and i >= stall:
                self._stall()
                return
            if delay and i:
                time.sleep(delay)
            w.write(b"%x\r\n%s\r\n" % (len(e), e))
        w.write(b"0\r\n\r\n")

    def _reset(self) -> None:
        """Drop the connection with a TCP reset, without a response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()

    def _stall(self) -> None:
        """Send nothing more until the client hangs up (at most STALL_MAX_S), then close."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.settimeout(STALL_MAX_S)
            while self.connection.recv(65536):
                pass

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
    """``python -m hydraguard_dev.upstream [--host H] [--port N] [--port-file PATH]``."""
    ap = argparse.ArgumentParser(description=DESCRIPTION)
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
