"""mitmproxy hooks -> Gateway. This module only translates; the logic lives in pipeline.py."""

from __future__ import annotations

import json
import logging
import sys
import weakref
from pathlib import Path

from mitmproxy import connection, exceptions, http, tls

from .geo import GeoDatabaseError
from .pipeline import HEALTH_PATH, Exchange, Gateway, RequestView
from .policy import PolicyError, load_policy

log = logging.getLogger("hydraguard")

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules" / "default.yaml"
KEY = "hydraguard"


def _request_id(flow: http.HTTPFlow) -> str:
    return "req_hg" + flow.id.replace("-", "")[:22]


def _view(flow: http.HTTPFlow, request_id: str) -> RequestView:
    req = flow.request
    headers = req.headers

    def header(name: str) -> str | None:
        values = headers.get_all(name)
        return ", ".join(values) if values else None

    peer = flow.client_conn.peername[0] if flow.client_conn.peername else None
    return RequestView(
        method=req.method, path=req.path, peer=peer, headers=header,
        body=req.raw_content or b"", content_encoding=headers.get("content-encoding", ""),
        request_id=request_id,
    )


def _respond(flow: http.HTTPFlow, status: int, body: bytes, headers: dict[str, str]) -> None:
    flow.response = http.Response.make(status, body, headers)
    flow.metadata["hydraguard_answered"] = True


class HydraGuard:
    """The hydraguard addon: decide on each request, meter each response, log each decision."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self._ja4: weakref.WeakKeyDictionary[connection.Client, str] = \
            weakref.WeakKeyDictionary()

    def load(self, loader) -> None:
        loader.add_option("hydraguard_rules", str, "", "hydraguard rules YAML (empty: shipped "
                          "rules/default.yaml)")
        loader.add_option("hydraguard_log", str, "", "Decision log path ('-' for stdout); "
                          "overrides the rules file's log.path")
        loader.add_option("hydraguard_stdout_clean", bool, True, "Send mitmproxy's own log "
                          "lines to stderr so stdout carries only decision lines")

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if "hydraguard_stdout_clean" in updated and ctx.options.hydraguard_stdout_clean:
            for h in logging.getLogger().handlers:
                if getattr(h, "file", None) is sys.stdout:
                    h.file = sys.stderr  # mitmproxy's TermLog handler
        if not updated & {"hydraguard_rules", "hydraguard_log"} and self.gateway is not None:
            return
        path = ctx.options.hydraguard_rules or str(DEFAULT_RULES)
        try:
            policy = load_policy(path)
        except PolicyError as e:
            raise exceptions.OptionsError(f"hydraguard: invalid rules:\n{e}") from e
        old = self.gateway
        try:
            self.gateway = Gateway(policy, log_path=ctx.options.hydraguard_log or None)
        except (GeoDatabaseError, OSError) as e:
            raise exceptions.OptionsError(f"hydraguard: {e}") from e
        if old is not None:
            old.close()
        log.info("hydraguard: loaded %d rule(s) from %s", len(policy.rules), path)

    def done(self) -> None:
        if self.gateway is not None:
            self.gateway.close()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        gw = self.gateway
        if gw is None or flow.response or flow.error:
            return
        if flow.request.path.split("?", 1)[0] == HEALTH_PATH:
            body = json.dumps({"status": "ok", "rules": len(gw.policy.rules)}).encode()
            _respond(flow, 200, body, {"content-type": "application/json"})
            flow.metadata["hydraguard_health"] = True
            return
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > gw.policy.settings.max_body_bytes:
            ex = gw.begin(_view(flow, _request_id(flow)))
            ex.facts.body_error = "too_large"
            from .decide import Decision

            ex.decision = Decision("deny", "body_too_large", f"request body exceeds "
                                   f"{gw.policy.settings.max_body_bytes} bytes", kind="too_large")
            flow.metadata[KEY] = ex
            _respond(flow, *gw.denial(ex))

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        gw = self.gateway
        if gw is not None:
            ja4 = gw.indicators.client_hello(data.client_hello)
            if ja4:
                self._ja4[data.context.client] = ja4

    async def request(self, flow: http.HTTPFlow) -> None:
        gw = self.gateway
        if gw is None or flow.response or flow.error:
            return
        view = _view(flow, _request_id(flow))
        view.tls_ja4 = self._ja4.get(flow.client_conn)
        ex = gw.begin(view)
        flow.metadata[KEY] = ex
        if not ex.decision.enforced:
            await gw.admit(ex, view.body)
        if ex.decision.enforced:
            _respond(flow, *gw.denial(ex))
            return
        if ex.body is not None:
            flow.request.headers.pop("content-encoding", None)
            flow.request.content = ex.body  # also fixes content-length
        if ex.facts.stream:
            flow.request.headers["accept-encoding"] = "identity"  # meter plain SSE bytes

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex: Exchange | None = flow.metadata.get(KEY)
        if ex is None or self.gateway is None or flow.metadata.get("hydraguard_answered"):
            return
        resp = flow.response
        assert resp is not None
        if ex.admission is not None and ex.admission.headers:
            resp.headers.update(ex.admission.headers)  # the cluster's budget, provider style
        if "text/event-stream" in resp.headers.get("content-type", ""):
            meter = self.gateway.stream_meter(ex)
            if meter is not None:
                resp.stream = meter.feed

    async def response(self, flow: http.HTTPFlow) -> None:
        ex: Exchange | None = flow.metadata.get(KEY)
        if ex is None or self.gateway is None:
            return
        resp = flow.response
        assert resp is not None
        body = None if ex.meter is not None else resp.get_content(strict=False)
        await self.gateway.finish(ex, status=resp.status_code, body=body,
                            answered_by_proxy=bool(flow.metadata.get("hydraguard_answered")))

    async def error(self, flow: http.HTTPFlow) -> None:
        ex: Exchange | None = flow.metadata.get(KEY)
        if self.gateway is None or flow.metadata.get("hydraguard_health"):
            return
        if ex is None:  # failed before the request hook (e.g. body over mitmproxy's limit)
            ex = self.gateway.begin(_view(flow, _request_id(flow)))
        status = flow.response.status_code if flow.response else None
        msg = flow.error.msg if flow.error else "flow error"
        await self.gateway.finish(ex, status=status, error=msg)

