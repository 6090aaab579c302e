"""mitmproxy hooks -> Gateway. This module only translates; the logic lives in pipeline.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

from mitmproxy import connection, exceptions, http, tls

from . import status, upstream
from .admin.listener import DEFAULT_TOKEN_ENV, AdminListener, check_admin
from .decision_log import iso_time
from .flows import ARRIVED, edit_credentials, hostport, metered, request_id, respond, view
from .geo import GeoDatabaseError
from .geo.notices import geo_lines, geo_warnings, not_shown_yet
from .metrics import Metrics
from .pipeline import HEALTH_PATH, Exchange, Gateway
from .policy import PolicyError, load_policy
from .reload import RulesWatcher, next_gateway
from .startup import ConfigError

log = logging.getLogger("hydraguard")

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules" / "default.yaml"
KEY = "hydraguard"
GW = "hydraguard_gw"  # the Gateway (policy snapshot) a flow was decided with
WATCH = "hydraguard_watch"  # the flow's upstream.UpstreamWatch (connect / read deadlines)
RETIRE_AFTER_S = 300.0  # a replaced gateway's own resources are closed after this long
FILES_CHECK_S = 0.5  # the GeoIP / list refresher wakes this often (files: own intervals)
STATUS_CHECK_S = 0.5  # the status file is rewritten on a change seen this often


def _announce_geo(gw: Gateway) -> None:
    """Log each GeoIP file's build date and check, and the demo / stale warnings this process
    has not shown yet (`hydraguard run` printed them before mitmdump started)."""
    for line in geo_lines(gw.geo):
        log.info("hydraguard: %s", line)
    for w in not_shown_yet(geo_warnings(gw.policy, gw.geo)):
        log.warning("hydraguard: %s", w)


class HydraGuard:
    """The hydraguard addon: decide on each request, meter each response, log each decision."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self._ja4: weakref.WeakKeyDictionary[connection.Client, str] = \
            weakref.WeakKeyDictionary()
        self.watcher: RulesWatcher | None = None
        self._reload_task: asyncio.Task | None = None
        self._files_task: asyncio.Task | None = None
        self._status_task: asyncio.Task | None = None
        self._retired: list[asyncio.TimerHandle] = []
        self.status_path: str | None = None
        self._status_extra: dict[str, object] = {}
        self._status_last: tuple[dict, float] | None = None  # (document, monotonic time)
        self.metrics = Metrics(lambda: (self.gateway, self.watcher))
        self.admin: AdminListener | None = None

    def load(self, loader) -> None:
        upstream.install()  # provider-format answers for upstream failures
        loader.add_option("hydraguard_rules", str, "", "hydraguard rules YAML (empty: shipped "
                          "rules/default.yaml); a folder, or several paths joined by ','")
        loader.add_option("hydraguard_reload_ms", int, 1000, "Milliseconds between checks of "
                          "the rules files for changes (hot reload); 0: never")
        loader.add_option("hydraguard_reload_settle_ms", int, 200, "A changed rules file is "
                          "read once its size and mtime stayed the same this many "
                          "milliseconds (a file still being written is not read)")
        loader.add_option("hydraguard_status", str, "", "Status file for `hydraguard health` "
                          "(empty: <temp dir>/hydraguard-<port>.status.json; 'off': none)")
        loader.add_option("hydraguard_log", str, "", "Decision log path ('-' for stdout); "
                          "overrides the rules file's log.path")
        loader.add_option("hydraguard_admin", str, "", "Admin listener (metrics, clusters, "
                          "overrides): PORT (loopback) or HOST:PORT; empty: none")
        loader.add_option("hydraguard_admin_token_env", str, DEFAULT_TOKEN_ENV, "Environment "
                          "variable holding the admin listener's bearer token (unset: none "
                          "needed, loopback only)")
        loader.add_option("hydraguard_admin_audit", str, "", "Audit log of admin changes "
                          "(empty: admin-audit.jsonl beside the decision log, stderr when "
                          "the decision log is stdout)")
        loader.add_option("hydraguard_stdout_clean", bool, True, "Send mitmproxy's own log "
                          "lines to stderr so stdout carries only decision lines")

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if "hydraguard_stdout_clean" in updated and ctx.options.hydraguard_stdout_clean:
            for h in logging.getLogger().handlers:
                if getattr(h, "file", None) is sys.stdout:
                    h.file = sys.stderr  # mitmproxy's TermLog handler
        if self.watcher is not None:
            self.watcher.settle_s = ctx.options.hydraguard_reload_settle_ms / 1000
        if "hydraguard_admin" in updated or "hydraguard_admin_token_env" in updated:
            self._configure_admin(ctx)
        if not updated & {"hydraguard_rules", "hydraguard_log"} and self.gateway is not None:
            return
        path = ctx.options.hydraguard_rules or str(DEFAULT_RULES)
        paths = [p.strip() for p in path.split(",") if p.strip()]
        try:
            policy = load_policy(paths)
        except PolicyError as e:
            raise exceptions.OptionsError(f"hydraguard: invalid rules:\n{e}") from e
        old = self.gateway
        try:
            self.gateway = Gateway(policy, log_path=ctx.options.hydraguard_log or None,
                                   files_in_background=True)
        except (GeoDatabaseError, OSError, ValueError) as e:  # ValueError: a bad $REDIS_URL
            raise exceptions.OptionsError(f"hydraguard: {e}") from e
        self.watcher = RulesWatcher(paths, policy,
                                    settle_s=ctx.options.hydraguard_reload_settle_ms / 1000)
        self.gateway.policy_digest = self.watcher.digest
        if self.admin is not None:
            self.metrics.attach(self.gateway)
        if old is not None:
            old.close()
        log.info("hydraguard: loaded %d rule(s) from %s (%s)", len(policy.rules), path,
                 self.gateway.policy_digest)
        _announce_geo(self.gateway)

    def _configure_admin(self, ctx) -> None:
        """Check `hydraguard_admin` (never the proxy port; beyond loopback only with a
        token); the listener starts in `running`."""
        value = ctx.options.hydraguard_admin
        if self.admin is not None and self.admin.server is not None:
            return  # started: changing it needs a restart
        if not value:
            self.admin = None
            return
        token = os.environ.get(ctx.options.hydraguard_admin_token_env or "") or None
        try:
            host, port = check_admin(value, (ctx.options.listen_host,
                                             ctx.options.listen_port or 8080), token)
        except ConfigError as e:
            raise exceptions.OptionsError(f"hydraguard: {e}") from e
        self.admin = AdminListener(host, port, token, ctx.options.hydraguard_admin_audit or None,
                                   self.metrics)

    # -- hot reload ---------------------------------------------------------------------
    def running(self) -> None:
        from mitmproxy import ctx

        loop = asyncio.get_running_loop()
        if ctx.options.hydraguard_reload_ms > 0 and self._reload_task is None:
            self._reload_task = loop.create_task(self._every(
                lambda: max(0.02, (ctx.options.hydraguard_reload_ms or 1000) / 1000),
                self.check_reload, "rules reload"))
        if self._files_task is None:
            self._files_task = loop.create_task(self._every(
                lambda: FILES_CHECK_S, self.refresh_files, "refreshing GeoIP / list files"))
        if self._status_task is None:
            self._start_status(ctx)
        if self.admin is not None and self.admin.server is None:
            if self.gateway is not None:
                self.metrics.attach(self.gateway)
            self.admin.start(lambda: self.gateway, self._status_doc)

    def _status_doc(self) -> dict:
        """The status document in force (what the status file holds)."""
        gw = self.gateway
        if gw is None:
            return {}
        return status.snapshot(gw, self.watcher, **self._status_extra)

    def _start_status(self, ctx) -> None:
        """Print the startup line; write the status file now and on every change."""
        ps = ctx.master.addons.get("proxyserver")
        addrs = ps.listen_addrs() if ps is not None else []
        tls = bool(ctx.options.certs)
        listen = [f"{'https' if tls else 'http'}://{hostport(a[0], a[1])}" for a in addrs]
        upstream = ", ".join(m.split(":", 1)[1] if m.startswith("reverse:") else m
                             for m in ctx.options.mode)
        opt = ctx.options.hydraguard_status
        port = addrs[0][1] if addrs else status.DEFAULT_PORT
        self.status_path = None if opt == "off" else (opt or status.default_status_path(port))
        self._status_extra = {"listen": listen, "upstream": upstream,
                              "started": iso_time(time.time()),
                              "status_file": self.status_path}
        gw = self.gateway
        if gw is not None:
            print(status.startup_line(status.snapshot(gw, self.watcher, **self._status_extra)),
                  file=sys.stderr, flush=True)
        if self.status_path is not None:
            self._status_task = asyncio.get_running_loop().create_task(self._status_loop())

    async def _status_loop(self) -> None:
        """Write the status file now, then whenever it changes (and as a heartbeat); a
        failure is logged once per distinct message, and the proxy goes on."""
        failed = None
        while True:
            try:
                await self.write_status()
                failed = None
            except Exception as e:
                if str(e) != failed:
                    failed = str(e)
                    log.warning("hydraguard: cannot write the status file %s: %s",
                                self.status_path, e)
            await asyncio.sleep(STATUS_CHECK_S)

    async def write_status(self, force: bool = False) -> None:
        """Rewrite the status file when its content changed, or as a heartbeat."""
        gw, path = self.gateway, self.status_path
        if gw is None or path is None:
            return
        doc = status.snapshot(gw, self.watcher, **self._status_extra)
        now = time.monotonic()
        last = self._status_last
        if not force and last is not None and last[0] == doc and \
                now - last[1] < status.HEARTBEAT_S:
            return
        self._status_last = (doc, now)
        wall = time.time()
        await asyncio.to_thread(status.write_status, path,
                                {**doc, "updated": iso_time(wall), "updated_epoch": wall})

    @staticmethod
    async def _every(interval: Callable[[], float], step: Callable[[], Awaitable[object]],
                     what: str) -> None:
        """Run ``step`` forever, ``interval()`` seconds apart; a failure is logged, and the
        loop goes on."""
        while True:
            await asyncio.sleep(interval())
            try:
                await step()
            except Exception:
                log.exception("hydraguard: %s failed", what)

    async def refresh_files(self) -> None:
        """Re-read changed GeoIP databases and list files in a worker thread, never in a
        hook."""
        gw = self.gateway
        if gw is not None:
            await asyncio.to_thread(gw.refresh_files)

    async def check_reload(self) -> bool:
        """Poll the rules; swap in a valid change. True when new rules are in force."""
        w, old = self.watcher, self.gateway
        if w is None or old is None:
            return False
        new = await next_gateway(w, old)
        if new is None or self.watcher is not w or self.gateway is not old:
            return False
        self.gateway = new  # one assignment: each request sees the old or the new snapshot
        if self.admin is not None:
            self.metrics.attach(new)
        if new.geo is not old.geo:
            _announce_geo(new)
        loop = asyncio.get_running_loop()
        self._retired.append(loop.call_later(
            RETIRE_AFTER_S, lambda: loop.create_task(old.aclose_unshared())))
        log.warning("hydraguard: rules reloaded: %d rule(s), version %s (was %s)",
                    len(new.policy.rules), new.policy_digest, old.policy_digest)
        return True

    def done(self) -> None:
        for task in (self._reload_task, self._files_task, self._status_task):
            if task is not None:
                task.cancel()
        for h in self._retired:
            h.cancel()
        if self.admin is not None:
            self.admin.stop()
        if self.gateway is not None:
            self.gateway.close()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        gw = self.gateway
        if gw is None or flow.response or flow.error:
            return
        if flow.request.path.split("?", 1)[0] == HEALTH_PATH:
            # Any client reaches this: ok / degraded only (`hydraguard health` has the detail).
            state = "degraded" if status.problems(gw, self.watcher) else "ok"
            respond(flow, 200, json.dumps({"status": state}).encode(),
                     {"content-type": "application/json", "cache-control": "no-store"})
            flow.metadata["hydraguard_health"] = True
            return
        flow.metadata[ARRIVED] = flow.request.timestamp_start or time.time()
        req = flow.request
        route = gw.route(req.method, req.path, req.headers.get)
        length = req.headers.get("content-length", "")
        if length.isdigit() and int(length) > gw.batches.body_cap(route):
            ex = gw.too_large(view(flow, request_id(flow)))
            flow.metadata[KEY] = ex
            flow.metadata[GW] = gw
            respond(flow, *gw.denial(ex))
        elif route.kind == "upload":  # decided on its headers, streamed, never buffered
            ex = gw.begin(view(flow, request_id(flow)))
            flow.metadata[KEY] = ex
            flow.metadata[GW] = gw
            if ex.decision.enforced:
                respond(flow, *gw.denial(ex))
            else:
                edit_credentials(flow, ex)
                req.stream = gw.batches.upload_stream(ex, req.headers.get("content-type"))

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        gw = self.gateway
        if gw is not None:
            ja4 = gw.signals.client_hello(data.client_hello)
            if ja4:
                self._ja4[data.context.client] = ja4

    async def request(self, flow: http.HTTPFlow) -> None:
        gw = self.gateway
        if gw is None or flow.response or flow.error:
            return
        if KEY in flow.metadata:  # an upload, decided on its headers and streamed
            self._watch(flow, flow.metadata.get(GW, gw))
            return
        req = view(flow, request_id(flow))
        req.tls_ja4 = self._ja4.get(flow.client_conn)
        ex = gw.begin(req, batch=await gw.preparse(req))
        flow.metadata[KEY] = ex
        flow.metadata[GW] = gw
        if not ex.decision.enforced:
            await gw.admit(ex)
        if ex.decision.enforced:
            respond(flow, *gw.denial(ex))
            return
        edit_credentials(flow, ex)
        if ex.body is not None:
            flow.request.headers.pop("content-encoding", None)
            flow.request.content = ex.body  # also fixes content-length
        if ex.facts.stream:
            flow.request.headers["accept-encoding"] = "identity"  # meter plain SSE bytes
        self._watch(flow, gw)

    def _watch(self, flow: http.HTTPFlow, gw: Gateway) -> None:
        """Start the upstream connect / read deadlines of a forwarded request."""
        s = gw.policy.settings
        flow.metadata[WATCH] = upstream.UpstreamWatch(
            flow, s.upstream_connect_timeout, s.upstream_read_timeout, self._abort_upstream)

    @staticmethod
    def _abort_upstream(flow: http.HTTPFlow, phase: str) -> bool:
        from mitmproxy import ctx

        return upstream.abort_upstream(ctx.master.addons.get("proxyserver"), flow, phase)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex: Exchange | None = flow.metadata.get(KEY)
        gw: Gateway | None = flow.metadata.get(GW)
        if ex is None or gw is None or flow.metadata.get("hydraguard_answered"):
            return
        resp = flow.response
        assert resp is not None
        watch: upstream.UpstreamWatch | None = flow.metadata.get(WATCH)
        if watch is not None:
            watch.progress()
        if ex.admission is not None and ex.admission.headers:
            resp.headers.update(ex.admission.headers)  # the cluster's budget, provider style
        if "text/event-stream" in resp.headers.get("content-type", ""):
            meter = gw.stream_meter(ex)
            if meter is not None:
                resp.stream = metered(meter.feed, watch.progress if watch else None)
        elif (results := gw.batches.response_stream(ex, resp.status_code)) is not None:
            resp.stream = metered(results.feed, watch.progress if watch else None)

    async def response(self, flow: http.HTTPFlow) -> None:
        ex: Exchange | None = flow.metadata.get(KEY)
        gw: Gateway | None = flow.metadata.get(GW)
        if ex is None or gw is None:
            return
        watch = flow.metadata.pop(WATCH, None)
        if watch is not None:
            watch.stop()
        resp = flow.response
        assert resp is not None
        body = None if ex.meter is not None else resp.get_content(strict=False)
        new = gw.batches.rewrite(ex, resp.status_code, body)
        if new is not None:
            resp.content = body = new  # a batch's results_url, sent through the proxy
        await gw.finish(ex, status=resp.status_code, body=body,
                        answered_by_proxy=bool(flow.metadata.get("hydraguard_answered")))

    async def error(self, flow: http.HTTPFlow) -> None:
        ex: Exchange | None = flow.metadata.get(KEY)
        gw: Gateway | None = flow.metadata.get(GW) or self.gateway
        if gw is None or flow.metadata.get("hydraguard_health"):
            return
        watch = flow.metadata.pop(WATCH, None)
        if watch is not None:
            watch.stop()
        msg = flow.error.msg if flow.error else "flow error"
        if ex is None:  # failed before the request hook (e.g. body over mitmproxy's limit)
            ex = gw.failed_early(view(flow, request_id(flow)), msg)
        failure = None if flow.metadata.get("hydraguard_answered") else \
            upstream.failure_of(flow)
        if failure is not None:
            if watch is not None and failure.endswith("_timeout"):
                secs = watch.connect_s if failure == "connect_timeout" else watch.read_s
                msg = f"upstream {failure.replace('_', ' ')} after {secs:g}s ({msg})"
            if not upstream.headers_sent(flow):  # else the stream just ends
                code, body, headers = gw.upstream_failed(ex, failure)
                upstream.answer(flow, code, body, headers)
                await gw.finish(ex, status=code, error=msg, answered_by_proxy=True)
                return
            ex.extra["upstream_failure"] = failure
        code = flow.response.status_code if flow.response else None
        await gw.finish(ex, status=code, error=msg)

