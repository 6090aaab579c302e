"""When the upstream fails: a provider-format answer instead of mitmproxy's HTML page, and
connect / read timeouts so a stalled upstream cannot hold a request (and its budget
reservation) forever.

mitmproxy 12 answers a failed upstream exchange (refused, reset, unparsable) itself, after the
`error` hook, with an HTML 502 page that carries `Server: mitmproxy` and the upstream's address;
an addon cannot replace it (mitmproxy PR #7999 proposes that a response set in the `error` hook
be sent instead). `install()` adds exactly that to mitmproxy's `HttpStream`, for the responses
this addon hands over with `answer()`; any other flow passes through unchanged. The same wrapper
notes on the flow that the failure was on the upstream side (`FAILED`: the code of mitmproxy's
ResponseProtocolError), so the `error` hook can tell it from a client that went away.

mitmproxy has no per-request upstream timeout (`tcp_timeout` measures idleness of the whole
client connection). `UpstreamWatch` keeps a connect and a read deadline per flow on loop timers
(no task, nothing blocks) and, when one passes, cancels the flow's upstream connection task;
mitmproxy then reports a failed upstream (`TIMED_OUT` says which deadline) and the `error` hook
answers 504 and settles the reservation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import connection, http
from mitmproxy.proxy.layers import http as layers

log = logging.getLogger("hydraguard")

ANSWER = "hydraguard_upstream_answer"  # flow.metadata: response sent instead of mitmproxy's
FAILED = "hydraguard_upstream_failed"  # flow.metadata: ErrorCode name of an upstream failure
TIMED_OUT = "hydraguard_upstream_timeout"  # flow.metadata: "connect" or "read"
_NEEDED = ("HttpStream", "SendHttp", "ResponseProtocolError", "ResponseHeaders", "ResponseData",
           "ResponseEndOfMessage")

Abort = Callable[[http.HTTPFlow, str], bool]


def install() -> bool:
    """Let `answer()` replace mitmproxy's error page for upstream failures (idempotent). False
    when this mitmproxy does not have the expected layer (its own page is sent then)."""
    stream = getattr(layers, "HttpStream", None)
    original = getattr(stream, "handle_protocol_error", None)
    if original is None or not all(hasattr(layers, n) for n in _NEEDED):
        log.warning("hydraguard: this mitmproxy cannot take provider-format answers for "
                    "upstream failures; its own error page is sent")
        return False
    if getattr(original, "_hydraguard", False):
        return True

    def handle_protocol_error(self: Any, event: Any) -> Generator[Any, Any, Any]:
        upstream_side = isinstance(event, layers.ResponseProtocolError)
        if upstream_side:
            self.flow.metadata[FAILED] = event.code.name
        steps = original(self, event)
        reply = None
        while True:
            try:
                command = steps.send(reply)
            except StopIteration as stop:
                return stop.value
            if upstream_side and isinstance(command, layers.SendHttp) and \
                    command.event is event and command.connection is self.context.client:
                response = self.flow.metadata.pop(ANSWER, None)
                if response is not None:  # instead of the error page
                    yield from _send(self, response)
                    reply = None
                    continue
            reply = yield command

    handle_protocol_error._hydraguard = True  # type: ignore[attr-defined]
    handle_protocol_error.__wrapped__ = original  # type: ignore[attr-defined]
    stream.handle_protocol_error = handle_protocol_error  # type: ignore[union-attr]
    return True


def _send(stream: Any, response: http.Response) -> Generator[Any, Any, None]:
    sid, client = stream.stream_id, stream.context.client
    yield layers.SendHttp(layers.ResponseHeaders(sid, response, False), client)
    if response.raw_content:
        yield layers.SendHttp(layers.ResponseData(sid, response.raw_content), client)
    yield layers.SendHttp(layers.ResponseEndOfMessage(sid), client)


def failure_of(flow: http.HTTPFlow) -> str | None:
    """What went wrong upstream: "connect_timeout", "read_timeout", "unreachable" (no
    connection), "failed" (reset, closed or unparsable response); None when the flow failed
    on the client side (or `install()` could not wrap mitmproxy)."""
    timed_out = flow.metadata.get(TIMED_OUT)
    if timed_out:
        return f"{timed_out}_timeout"
    code = flow.metadata.get(FAILED)
    if code is None:
        return None
    return "unreachable" if code == "CONNECT_FAILED" else "failed"


def headers_sent(flow: http.HTTPFlow) -> bool:
    """The client already has the response head (a streamed response): too late to answer."""
    return flow.response is not None and bool(flow.response.stream)


def answer(flow: http.HTTPFlow, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Send this response for the flow's upstream failure (call it in the `error` hook)."""
    response = http.Response.make(status, body, headers)
    if flow.request.http_version.startswith("HTTP/1"):
        response.headers["connection"] = "close"  # the exchange is over on this connection
    flow.response = response
    flow.metadata[ANSWER] = response


def abort_upstream(proxyserver: Any, flow: http.HTTPFlow, phase: str) -> bool:
    """Cancel the task of the flow's upstream connection: the one being opened ("connect") or
    the one in use ("read"). False when there was none to cancel."""
    handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id)
    transports = getattr(handler, "transports", None)
    if not transports:
        return False
    hit = False
    for conn, io in list(transports.items()):
        task = getattr(io, "handler", None)
        if not isinstance(conn, connection.Server) or task is None:
            continue
        if phase == "read":
            mine = conn is flow.server_conn
        else:  # being opened: no TCP connection yet, not failed yet
            mine = not conn.connected and conn.timestamp_tcp_setup is None and \
                conn.error is None
        if mine:
            task.cancel(f"upstream {phase} timeout")
            hit = True
    return hit


class UpstreamWatch:
    """The connect and read deadlines of one flow's upstream exchange.

    Connect: from the `request` hook until the upstream connection is open. Read: the upstream
    may stay silent at most `read_s` seconds: counted from the later of connection and last
    progress (the response head, each chunk of a streamed response; a buffered body must
    arrive within `read_s` of its head). `stop()` when the flow ends."""

    __slots__ = ("_abort", "_handle", "connect_s", "flow", "last", "read_s", "started")

    def __init__(self, flow: http.HTTPFlow, connect_s: float, read_s: float,
                 abort: Abort) -> None:
        self.flow, self.connect_s, self.read_s, self._abort = flow, connect_s, read_s, abort
        self.started = self.last = time.time()
        self._handle: asyncio.TimerHandle | None = \
            asyncio.get_running_loop().call_later(connect_s, self._check)

    def progress(self) -> None:
        """The upstream sent something (cheap: called for every streamed chunk)."""
        self.last = time.time()

    def stop(self) -> None:
        """The flow ended: no more checks."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def due(self) -> tuple[str, float]:
        """(phase, the time.time() at which it times out)."""
        server = self.flow.server_conn
        if server is not None and server.connected:
            return "read", max(self.last, server.timestamp_tcp_setup or 0.0) + self.read_s
        return "connect", self.started + self.connect_s

    def _check(self) -> None:
        self._handle = None
        phase, due = self.due()
        wait = due - time.time()
        if wait > 0:
            self._handle = asyncio.get_running_loop().call_later(wait, self._check)
            return
        self.flow.metadata[TIMED_OUT] = phase  # before the cancellation is delivered
        try:
            aborted = self._abort(self.flow, phase)
        except Exception:
            log.exception("hydraguard: closing a stalled upstream connection failed")
            aborted = False
        if not aborted:
            del self.flow.metadata[TIMED_OUT]
            log.warning("hydraguard: upstream %s timeout, but no upstream connection to close "
                        "was found (request %s)", phase, self.flow.id)
