"""The admin listener's part of the addon: checking `--admin`, starting the server on the
running loop, the audit log, and keeping shared overrides in sync.

The address: ``PORT`` (loopback), ``HOST:PORT`` or ``[IPv6]:PORT``, as `--listen`; never the
proxy's port. A token comes from the environment (``HYDRAGUARD_ADMIN_TOKEN`` unless
`hydraguard_admin_token_env` names another variable); a non-loopback address needs one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..startup import ConfigError, parse_listen

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..pipeline import Gateway
    from .server import AdminServer

log = logging.getLogger("hydraguard")

__all__ = ["DEFAULT_TOKEN_ENV", "AdminListener", "check_admin"]

DEFAULT_TOKEN_ENV = "HYDRAGUARD_ADMIN_TOKEN"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def check_admin(value: str, listen: tuple[str, int] | None, token: str | None
                ) -> tuple[str, int]:
    """(host, port) of an `--admin` value; ConfigError (one line) when it is unusable."""
    try:
        host, port = parse_listen(value)
    except ConfigError as e:
        raise ConfigError(str(e).replace("--listen", "--admin")) from None
    if listen is not None and port != 0 and port == listen[1]:
        raise ConfigError(f"--admin {value}: the admin listener never shares the proxy's "
                          f"port {port}: choose another")
    if host not in LOOPBACK_HOSTS and not token:
        raise ConfigError(f"--admin {value} listens beyond loopback: set {DEFAULT_TOKEN_ENV} "
                          "(the bearer token the admin listener will require)")
    return host, port


class AuditLog:
    """One JSON line per operator change: to a file (`path`), else to stderr; and a summary
    at WARNING in mitmproxy's log."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._log = None
        if path:
            from ..decision_log import DecisionLog

            self._log = DecisionLog(path)

    def __call__(self, entry: dict[str, Any]) -> None:
        what = entry.get("account") or entry.get("cluster")
        log.warning("hydraguard admin: %s %s by %s: %s", entry.get("action"), what,
                    entry.get("operator") or entry.get("who"), entry.get("result"))
        if self._log is not None:
            self._log.write(entry)
        else:
            print(json.dumps(entry, separators=(",", ":"), default=str), file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


class AdminListener:
    """Starts and stops the admin server and the overrides sync for the addon."""

    def __init__(self, host: str, port: int, token: str | None, audit_path: str | None,
                 metrics: Metrics) -> None:
        self.host, self.port, self.token = host, port, token
        self.audit_path = audit_path
        self.metrics = metrics
        self.server: AdminServer | None = None
        self.audit: AuditLog | None = None
        self._sync: asyncio.Task | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, gateway: Callable[[], Gateway | None],
              status: Callable[[], dict[str, Any]]) -> str:
        """Serve on the running loop; the URL (one line on stderr says it too)."""
        from ..overrides import SYNC_S
        from .server import AdminContext, AdminServer

        gw = gateway()
        path = self.audit_path
        if not path and gw is not None and gw.log.path != "-":
            path = os.path.join(os.path.dirname(os.path.abspath(gw.log.path)),
                                "admin-audit.jsonl")
        self.audit = AuditLog(path or None)
        ctx = AdminContext(gateway, status, self.metrics, self.token, self.audit)
        self.server = AdminServer(self.host, self.port, ctx)
        self.host, self.port = self.server.start()
        self._sync = asyncio.get_running_loop().create_task(self._sync_loop(gateway, SYNC_S))
        print(f"hydraguard: admin listener on {self.url} ("
              f"{'bearer token required' if self.token else 'loopback, no token'}; audit "
              f"log {path or 'stderr'})", file=sys.stderr, flush=True)
        return self.url

    @staticmethod
    async def _sync_loop(gateway: Callable[[], Gateway | None], every: float) -> None:
        """Re-read shared overrides (the request path reads this replica's copy)."""
        from ..budgets.redis_state import StateUnavailable

        failed = False
        while True:
            await asyncio.sleep(every)
            gw = gateway()
            if gw is None or not gw.overrides.shared:
                continue
            try:
                await gw.overrides.sync()
            except StateUnavailable:
                pass  # Redis down: the budget state says so once; the copy in hand stays
            except Exception:
                if not failed:
                    log.exception("hydraguard: reading the shared overrides failed")
                failed = True

    def stop(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
        if self.server is not None:
            self.server.stop()
        if self.audit is not None:
            self.audit.close()
