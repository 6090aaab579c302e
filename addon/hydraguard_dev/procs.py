"""Real processes on free local ports for tests, benches and the demo: the stand-in upstream
(``python -m hydraguard_dev.upstream``) and ``hydraguard run`` (mitmdump), with handles that read
the stub's introspection endpoints and the proxy's decision log. Stdlib only."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEV_SECRET = "test-secret"  # HYDRAGUARD_ACCOUNT_SECRET of a proxy() unless the caller sets one


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], object], timeout: float = 20.0, what: str = "condition"
               ) -> None:
    """Poll `pred` (exceptions count as not yet) until it is true; TimeoutError after that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if pred():
                return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def http_status(url: str, timeout: float = 1.0) -> int:
    """Status of a GET (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _get_json(url: str, timeout: float = 5.0) -> Any:
    """The JSON body of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        with e:
            return json.load(e)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the stand-in upstream in its own process --------------------------------------------------


@dataclass
class Upstream:
    """A running stand-in upstream process."""

    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        """Requests seen per path (``GET /__stub/stats``)."""
        return _get_json(f"{self.url}/__stub/stats")

    def last(self, path: str) -> dict[str, Any]:
        """Headers and body of the last request to ``path`` (``GET /__stub/last``)."""
        query = urllib.parse.urlencode({"path": path})
        return _get_json(f"{self.url}/__stub/last?{query}")


@contextlib.contextmanager
def upstream() -> Iterator[Upstream]:
    """Run the stand-in upstream in a subprocess on a free port; yields its handle."""
    with tempfile.TemporaryDirectory() as d:
        pf = Path(d) / "port"
        proc = subprocess.Popen(
            [sys.executable, "-m", "hydraguard_dev.upstream", "--host", "127.0.0.1",
             "--port", "0", "--port-file", str(pf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: pf.exists() and pf.read_text().strip(), what="stub upstream")
            yield Upstream(int(pf.read_text().strip()), proc)
        finally:
            _stop(proc)


# -- `hydraguard run` in its own process -------------------------------------------------------


@dataclass
class Proxy:
    """A running `hydraguard run` process and its decision log."""

    port: int
    proc: subprocess.Popen
    log_path: Path
    stderr_path: Path
    status_path: Path | None = None
    admin_port: int | None = None  # the admin listener's, when started with admin=True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        assert self.admin_port is not None, "started without admin=True"
        return f"http://127.0.0.1:{self.admin_port}"

    def admin(self, method: str, path: str, body: Any = None, *, token: str | None = None,
              headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """(status, body: JSON when it is, else text) of one admin listener request; a
        ``body`` is sent as JSON."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.admin_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw, ctype = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            with e:
                status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
        text = raw.decode("utf-8", "replace")
        return status, json.loads(text) if ctype.startswith("application/json") else text

    def status(self) -> dict[str, Any]:
        """The proxy's status file (what `hydraguard health --json` reads)."""
        assert self.status_path is not None
        return json.loads(self.status_path.read_text())

    def lines(self) -> list[dict[str, Any]]:
        """The decision log records written so far."""
        if not self.log_path.exists():
            return []
        return [json.loads(x) for x in self.log_path.read_text().splitlines() if x.strip()]

    def wait_lines(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The decision log once it holds at least ``n`` records; TimeoutError after that."""
        wait_until(lambda: len(self.lines()) >= n, timeout, f"{n} decision log lines")
        return self.lines()

    def by_request(self, request_id: str) -> dict[str, Any]:
        """The one decision log record of ``request_id``."""
        matches = [r for r in self.lines() if r["request_id"] == request_id]
        assert len(matches) == 1, matches
        return matches[0]

    def stderr(self) -> str:
        """What the process printed so far (stdout and stderr)."""
        return self.stderr_path.read_text(errors="replace")


@contextlib.contextmanager
def proxy(upstream_url: str, rules: str | Path | None = None, *,
          env: Mapping[str, str] | None = None, extra: Sequence[str] | None = None,
          workdir: Path | None = None, timeout: float = 30.0,
          rules_log: Path | None = None, admin: bool = False) -> Iterator[Proxy]:
    """Run `hydraguard run` in front of `upstream_url` on a free port; yields it once healthy.

    The decision log, the status file and the process output go to ``workdir`` (a temporary
    directory unless given); ``rules_log``: the rules set ``log.path`` to this file, and no
    ``--log`` is given. ``env`` is added to the environment, with HYDRAGUARD_ACCOUNT_SECRET
    defaulting to ``DEV_SECRET``. ``admin``: also start the admin listener (`--admin`) on
    another free loopback port (``Proxy.admin_port``)."""
    with tempfile.TemporaryDirectory() as d:
        wd = Path(workdir or d)
        log_path, err_path = rules_log or wd / "decisions.jsonl", wd / "proxy.stderr"
        status_path = wd / "status.json"
        port = free_port()
        cmd = [sys.executable, "-m", "hydraguard", "run", "--upstream", upstream_url,
               "--listen", f"127.0.0.1:{port}", "--status", str(status_path)]
        if rules_log is None:
            cmd += ["--log", str(log_path)]
        if rules:
            cmd += ["--rules", str(rules)]
        admin_port = free_port() if admin else None
        if admin_port is not None:
            cmd += ["--admin", f"127.0.0.1:{admin_port}"]
        cmd += list(extra or ())
        full_env = {**os.environ, "HYDRAGUARD_ACCOUNT_SECRET": DEV_SECRET, **(env or {})}
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=full_env,
                                    cwd=ROOT)
        p = Proxy(port, proc, log_path, err_path, status_path, admin_port)
        try:
            _wait_healthy(p, timeout)
            yield p
        finally:
            _stop(proc)


def _listening(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_healthy(p: Proxy, timeout: float) -> None:
    """Until /__hydraguard/healthz answers 200; RuntimeError at once if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if p.proc.poll() is not None:
            raise RuntimeError(f"proxy exited {p.proc.returncode}: {p.stderr()[-2000:]}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            if http_status(p.url + "/__hydraguard/healthz") == 200 and (
                    p.admin_port is None or _listening(p.admin_port)):
                return
        if time.monotonic() > deadline:
            raise TimeoutError("proxy did not become healthy")
        time.sleep(0.05)
