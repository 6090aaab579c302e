"""The upstream side of a flow: failure kinds, the connect / read deadlines, which upstream
connection a timeout closes, and the answer handed to mitmproxy (end to end:
test_e2e_upstream_failures.py)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from mitmproxy import connection
from mitmproxy.proxy.layers import http as layers
from mitmproxy.test import tflow

from hydraguard import refusals, upstream


@pytest.mark.parametrize(("meta", "failure"), [
    ({}, None),  # the client side failed (or mitmproxy could not be wrapped)
    ({upstream.FAILED: "CONNECT_FAILED"}, "unreachable"),
    ({upstream.FAILED: "GENERIC_SERVER_ERROR"}, "failed"),
    ({upstream.FAILED: "RESPONSE_TOO_LARGE"}, "failed"),
    ({upstream.FAILED: "GENERIC_SERVER_ERROR", upstream.TIMED_OUT: "read"}, "read_timeout"),
    ({upstream.FAILED: "CONNECT_FAILED", upstream.TIMED_OUT: "connect"}, "connect_timeout"),
])
def test_failure_of(meta, failure):
    f = tflow.tflow()
    f.metadata.update(meta)
    assert upstream.failure_of(f) == failure


@pytest.mark.parametrize(("failure", "status", "kind"), [
    ("unreachable", 502, "upstream"), ("failed", 502, "upstream"),
    ("connect_timeout", 504, "upstream_timeout"), ("read_timeout", 504, "upstream_timeout"),
])
def test_upstream_failure_decisions(failure, status, kind):
    d = refusals.upstream_failure(failure)
    assert (d.rule, d.kind) == (f"upstream_{failure}", kind)
    assert "upstream API" in d.reason


def test_install_wraps_mitmproxy_once():
    assert upstream.install() and upstream.install()
    method = layers.HttpStream.handle_protocol_error
    assert method._hydraguard and not getattr(method.__wrapped__, "_hydraguard", False)


def test_answer_and_headers_sent():
    f = tflow.tflow()
    assert not upstream.headers_sent(f)
    upstream.answer(f, 504, b'{"x":1}', {"content-type": "application/json"})
    assert f.response is f.metadata[upstream.ANSWER]
    assert (f.response.status_code, json.loads(f.response.content)) == (504, {"x": 1})
    assert f.response.headers["connection"] == "close"  # HTTP/1 client
    f = tflow.tflow(resp=True)
    f.response.stream = lambda chunk: chunk
    assert upstream.headers_sent(f)


def _server(connected: bool, error: str | None = None) -> connection.Server:
    s = connection.Server(address=("upstream.test", 443))
    s.state = connection.ConnectionState.OPEN if connected else connection.ConnectionState.CLOSED
    s.error = error
    return s


class _Task:
    def __init__(self) -> None:
        self.cancelled: str | None = None

    def cancel(self, msg: str) -> None:
        self.cancelled = msg


def test_abort_upstream_cancels_the_right_connection():
    f = tflow.tflow()
    used, opening, failed = _server(True), _server(False), _server(False, "refused")
    used.timestamp_tcp_setup = 1.0
    closing = _server(False)  # half-closed by the upstream: had a connection
    closing.state, closing.timestamp_tcp_setup = connection.ConnectionState.CAN_WRITE, 1.0
    f.server_conn = used
    tasks = {c: _Task() for c in (f.client_conn, used, opening, failed, closing)}
    handler = SimpleNamespace(transports={c: SimpleNamespace(handler=t)
                                          for c, t in tasks.items()})
    ps = SimpleNamespace(connections={f.client_conn.id: handler})
    assert upstream.abort_upstream(ps, f, "read")
    assert [tasks[c].cancelled for c in (f.client_conn, used, opening, failed)] == [
        None, "upstream read timeout", None, None]
    assert upstream.abort_upstream(ps, f, "connect")
    assert tasks[opening].cancelled == "upstream connect timeout"
    assert [tasks[c].cancelled for c in (f.client_conn, failed, closing)] == [None] * 3
    assert not upstream.abort_upstream(SimpleNamespace(connections={}), f, "read")


def test_watch_deadlines_and_timeout():
    async def run() -> tuple[list[str], dict]:
        f = tflow.tflow()
        f.server_conn = _server(False)
        aborted: list[str] = []
        w = upstream.UpstreamWatch(f, 0.05, 0.05, lambda flow, phase: aborted.append(phase)
                                   or True)
        phase, due = w.due()
        assert phase == "connect" and due == pytest.approx(w.started + 0.05)
        f.server_conn.state = connection.ConnectionState.OPEN
        f.server_conn.timestamp_tcp_setup = w.started + 10  # reads count from the connection
        assert w.due() == ("read", w.started + 10.05)
        f.server_conn.timestamp_tcp_setup = w.started
        w.progress()
        assert w.due() == ("read", pytest.approx(w.last + 0.05))
        while not aborted:
            await asyncio.sleep(0.01)
        w.stop()
        return aborted, dict(f.metadata)

    aborted, meta = asyncio.run(run())
    assert aborted == ["read"] and meta[upstream.TIMED_OUT] == "read"


def test_watch_without_a_connection_to_close_forgets_the_timeout():
    async def run() -> dict:
        f = tflow.tflow()
        f.server_conn = _server(False)
        tried: list[str] = []
        w = upstream.UpstreamWatch(f, 0.01, 5, lambda flow, phase: tried.append(phase)
                                   and False)
        while not tried:
            await asyncio.sleep(0.01)
        w.stop()
        return dict(f.metadata)

    assert upstream.TIMED_OUT not in asyncio.run(run())


def test_stopped_watch_never_fires():
    async def run() -> list[str]:
        f = tflow.tflow()
        f.server_conn = _server(False)
        fired: list[str] = []
        w = upstream.UpstreamWatch(f, 0.01, 0.01, lambda flow, phase: fired.append(phase)
                                   or True)
        w.stop()
        await asyncio.sleep(0.05)
        return fired

    assert asyncio.run(run()) == []
