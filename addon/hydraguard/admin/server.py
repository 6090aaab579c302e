"""The admin listener: a small HTTP/1.1 server (tornado, which mitmproxy ships) on the
proxy's own event loop, on its own address (loopback unless told otherwise; never the proxy
port). Handlers only read the gateway in force or await its stores: nothing blocks the loop.

    GET  /metrics                      Prometheus text exposition (metrics.py)
    GET  /healthz                      the status document (status.py) with its detail
    GET  /clusters?top=N               linked clusters by tokens charged in their windows
    GET  /clusters/{id}                members, evidence with times, budget levels
    POST /clusters/{id}/split          detach every member          {"ttl": s, "note": ""}
    GET  /accounts/{hash}              overrides, cluster and why
    POST /accounts/{hash}/unlink       detach the account            {"ttl": s, "note": ""}
    POST /accounts/{hash}/allow|deny   allow- / deny-list it         {"ttl": s, "note": ""}
    DELETE /accounts/{hash}/allow|deny|detach   lift an override
    GET  /overrides                    every override in force

With a token (`HYDRAGUARD_ADMIN_TOKEN`) every request needs ``Authorization: Bearer
<token>``; without one only loopback Host names are answered (no DNS rebinding), and a
POST must be ``application/json`` (a web page cannot send that cross-origin without a
preflight, which is never answered). Every change is audit-logged (one JSON line: who, what,
when) before it is answered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from redis.exceptions import RedisError

from ..budgets.redis_state import StateUnavailable
from ..decision_log import iso_time
from ..overrides import KINDS, MAX_TTL_S, Override, OverridesFull
from . import views

log = logging.getLogger("hydraguard")

__all__ = ["AdminContext", "AdminServer", "token_id"]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_TOP = 1000
MAX_BODY = 64 * 1024


def token_id(token: str) -> str:
    """How the audit log names a token holder: never the token itself."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:8]


@dataclass
class AdminContext:
    """What the handlers read: the gateway and status document in force, the metrics, the
    token (None: none needed) and the audit writer."""

    gateway: Callable[[], Any]
    status: Callable[[], dict[str, Any]]
    metrics: Any
    token: str | None
    audit: Callable[[dict[str, Any]], None]
    hosts: frozenset[str] = LOOPBACK


class Base(tornado.web.RequestHandler):
    ctx: AdminContext

    def initialize(self, ctx: AdminContext) -> None:
        self.ctx = ctx

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def prepare(self) -> None:
        token = self.ctx.token
        if token is not None:
            got = self.request.headers.get("Authorization", "")
            scheme, _, value = got.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    value.strip().encode(), token.encode()):
                self.set_header("WWW-Authenticate", 'Bearer realm="hydraguard-admin"')
                self.fail(401, "a valid bearer token is required")
                return
        else:
            host = self.request.host_name.strip("[]").lower()
            if host not in self.ctx.hosts:
                self.fail(403, "unexpected Host (set HYDRAGUARD_ADMIN_TOKEN to serve other "
                          "names)")
                return
        if self.request.method == "POST" and not self.request.headers.get(
                "Content-Type", "").startswith("application/json"):
            self.fail(415, "send a JSON body (Content-Type: application/json), {} at least")

    def fail(self, status: int, message: str) -> None:
        self.send(status, {"error": message})

    def send(self, status: int, doc: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(doc, indent=1, default=str) + "\n")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError):
            self.send(status_code, {"error": exc.log_message or self._reason})
        elif isinstance(exc, StateUnavailable | RedisError | OSError | TimeoutError):
            self.send(503, {"error": f"the state backend is unavailable "
                            f"({type(exc).__name__}); nothing was changed"})
        else:
            self.send(500, {"error": "internal error (see the proxy's log)"})

    def gw(self) -> Any:
        gw = self.ctx.gateway()
        if gw is None:
            raise tornado.web.HTTPError(503, "no rules loaded")
        return gw

    def who(self) -> dict[str, Any]:
        peer = self.request.remote_ip
        out: dict[str, Any] = {"who": token_id(self.ctx.token) if self.ctx.token else
                               f"peer:{peer}", "peer": peer}
        op = self.request.headers.get("X-Hydraguard-Operator")
        if op:
            out["operator"] = op[:64]
        return out

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            doc = json.loads(self.request.body)
        except ValueError:
            raise tornado.web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(doc, dict):
            raise tornado.web.HTTPError(400, "the body must be a JSON object")
        return doc

    def ttl(self, doc: dict[str, Any], default: float | None) -> float:
        v = doc.get("ttl", default)
        if v is None:
            raise tornado.web.HTTPError(400, "ttl (seconds) is required")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or not 0 < v <= MAX_TTL_S:
            raise tornado.web.HTTPError(400, f"ttl must be seconds in (0, {MAX_TTL_S:g}]")
        return float(v)

    def ident(self, value: str, what: str) -> str:
        if not ID.fullmatch(value):
            raise tornado.web.HTTPError(400, f"not a valid {what}")
        return value

    async def sync(self, gw: Any) -> None:
        """Shared overrides: read the latest before answering (whichever replica is asked)."""
        await gw.overrides.sync()

    async def apply(self, gw: Any, kind: str, accounts: list[str], ttl: float, note: str,
                  audit: dict[str, Any]) -> dict[str, Any]:
        now = gw.overrides.clock()
        who = self.who()
        entry = {"ts": iso_time(time.time()), "audit": "admin", **who, **audit,
                 "ttl": ttl, "until": iso_time(now + ttl), "note": note}
        try:
            for a in accounts:
                await gw.overrides.put(Override(kind, a, now + ttl, who["who"], now, note),
                                       sync=False)
            await gw.overrides.sync()
        except OverridesFull as e:
            self.ctx.audit({**entry, "result": f"refused: {e}"})
            raise tornado.web.HTTPError(409, str(e)) from None
        except Exception as e:
            self.ctx.audit({**entry, "result": f"failed: {type(e).__name__}"})
            raise
        self.ctx.audit({**entry, "result": "ok"})
        return entry


class Metrics(Base):
    async def get(self) -> None:
        await self.ctx.metrics.refresh()
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.ctx.metrics.render())


class Health(Base):
    async def get(self) -> None:
        gw = self.gw()
        doc = dict(self.ctx.status())
        st = gw.backends.state
        if st is not None and hasattr(st, "breaker"):
            doc["state"] = {**doc.get("state", {}), "breaker": st.breaker.state,
                            "url": getattr(st, "url", None)}
        doc["overrides"] = gw.overrides.counts()
        self.send(200, doc)


class Clusters(Base):
    async def get(self) -> None:
        try:
            n = int(self.get_query_argument("top", "20"))
        except ValueError:
            raise tornado.web.HTTPError(400, "top must be a number") from None
        gw = self.gw()
        await self.sync(gw)
        self.send(200, await views.top_doc(gw, max(1, min(n, MAX_TOP))))


class Cluster(Base):
    async def get(self, cid: str) -> None:
        gw = self.gw()
        await self.sync(gw)
        doc = await views.cluster_doc(gw, self.ident(cid, "cluster id"))
        if doc is None:
            raise tornado.web.HTTPError(404, f"no linked cluster {cid}")
        self.send(200, doc)


class Split(Base):
    async def post(self, cid: str) -> None:
        gw = self.gw()
        doc = self.body()
        found = await views.find_cluster(gw, self.ident(cid, "cluster id"))
        if found is None:
            raise tornado.web.HTTPError(404, f"no linked cluster {cid}")
        definition, _view, members = found
        ttl = self.ttl(doc, _window(gw, definition))
        entry = await self.apply(gw, "detach", members, ttl, str(doc.get("note", ""))[:200],
                               {"action": "split", "cluster": cid, "members": members})
        self.send(200, entry)


class Account(Base):
    async def get(self, account: str) -> None:
        gw = self.gw()
        await self.sync(gw)
        self.send(200, await views.account_doc(gw, self.ident(account, "account")))


class AccountAction(Base):
    async def post(self, account: str, action: str) -> None:
        gw = self.gw()
        account = self.ident(account, "account")
        doc = self.body()
        if action == "unlink":
            windows = [_window(gw, d) for d in gw.backends.links]
            ttl = self.ttl(doc, max(windows, default=3600.0))
            kind = "detach"
        else:
            ttl, kind = self.ttl(doc, None), action
        entry = await self.apply(gw, kind, [account], ttl, str(doc.get("note", ""))[:200],
                               {"action": action, "account": account})
        self.send(200, entry)

    async def delete(self, account: str, action: str) -> None:
        gw = self.gw()
        account = self.ident(account, "account")
        if action not in KINDS:
            raise tornado.web.HTTPError(404, "lift allow, deny or detach")
        entry = {"ts": iso_time(time.time()), "audit": "admin", **self.who(),
                 "action": f"lift-{action}", "account": account}
        try:
            had = await gw.overrides.remove(action, account)
        except Exception as e:
            self.ctx.audit({**entry, "result": f"failed: {type(e).__name__}"})
            raise
        self.ctx.audit({**entry, "result": "ok" if had else "none in force"})
        self.send(200 if had else 404, {**entry, "removed": had})


class Overrides(Base):
    async def get(self) -> None:
        gw = self.gw()
        await self.sync(gw)
        self.send(200, {"overrides": [
            {"kind": o.kind, "account": o.account, "until": iso_time(o.until),
             "by": o.by, "at": iso_time(o.at), "note": o.note}
            for o in gw.overrides.active()]})


class NotFound(Base):
    def prepare(self) -> None:
        super().prepare()
        if not self._finished:
            self.fail(404, "no such endpoint")


def _window(gw: Any, definition: str) -> float:
    """The link window of a cluster definition (how long an unlink lasts by default)."""
    b = gw.policy.budgets
    for c in b.clusters if b is not None else ():
        if c.id == definition and c.link is not None:
            return float(c.link.window_s)
    return 3600.0


def _quiet(handler: tornado.web.RequestHandler) -> None:
    """Access log at DEBUG only (mitmproxy's terminal shows WARNING and above)."""
    r = handler.request
    log.debug("hydraguard admin: %s %s %d", r.method, r.path, handler.get_status())


class AdminServer:
    """The listener; `start()` on the running event loop, `stop()` when done."""

    def __init__(self, host: str, port: int, ctx: AdminContext) -> None:
        self.host, self.port, self.ctx = host, port, ctx
        if host not in LOOPBACK:
            ctx.hosts = ctx.hosts | {host}
        seg = r"([^/]+)"
        self.app = tornado.web.Application([
            (r"/metrics", Metrics, {"ctx": ctx}),
            (r"/healthz", Health, {"ctx": ctx}),
            (r"/clusters", Clusters, {"ctx": ctx}),
            (rf"/clusters/{seg}", Cluster, {"ctx": ctx}),
            (rf"/clusters/{seg}/split", Split, {"ctx": ctx}),
            (r"/overrides", Overrides, {"ctx": ctx}),
            (rf"/accounts/{seg}", Account, {"ctx": ctx}),
            (rf"/accounts/{seg}/(unlink|allow|deny|detach)", AccountAction, {"ctx": ctx}),
        ], default_handler_class=NotFound, default_handler_args={"ctx": ctx},
            log_function=_quiet, compress_response=False)
        self.server: tornado.httpserver.HTTPServer | None = None

    def start(self) -> tuple[str, int]:
        """Bind and serve (call on the running loop); the bound (host, port)."""
        socks = tornado.netutil.bind_sockets(self.port, address=self.host)
        self.server = tornado.httpserver.HTTPServer(
            self.app, max_body_size=MAX_BODY, idle_connection_timeout=60)
        self.server.add_sockets(socks)
        self.port = socks[0].getsockname()[1]
        return self.host, self.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
