"""Real processes for end-to-end tests: the stand-in upstream and `hydraguard run` (mitmdump)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if pred():
                return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class Upstream:
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/__stub/stats").json()

    def last(self, path: str) -> dict:
        return httpx.get(f"{self.url}/__stub/last", params={"path": path}).json()


@contextlib.contextmanager
def upstream() -> Iterator[Upstream]:
    with tempfile.TemporaryDirectory() as d:
        pf = Path(d) / "port"
        proc = subprocess.Popen(
            [sys.executable, "-m", "hydraguard.stub_upstream", "--host", "127.0.0.1",
             "--port", "0", "--port-file", str(pf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: pf.exists() and pf.read_text().strip(), what="stub upstream")
            yield Upstream(int(pf.read_text().strip()), proc)
        finally:
            proc.terminate()
            proc.wait(10)


@dataclass
class Proxy:
    port: int
    proc: subprocess.Popen
    log_path: Path
    stderr_path: Path
    _seen: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(x) for x in self.log_path.read_text().splitlines() if x.strip()]

    def wait_lines(self, n: int, timeout: float = 10.0) -> list[dict]:
        wait_until(lambda: len(self.lines()) >= n, timeout, f"{n} decision log lines")
        return self.lines()

    def by_request(self, request_id: str) -> dict:
        matches = [r for r in self.lines() if r["request_id"] == request_id]
        assert len(matches) == 1, matches
        return matches[0]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextlib.contextmanager
def proxy(upstream_url: str, rules: str | Path | None = None, *, env: dict | None = None,
          extra: list[str] | None = None, workdir: Path | None = None) -> Iterator[Proxy]:
    with tempfile.TemporaryDirectory() as d:
        d = Path(workdir or d)
        port = free_port()
        log_path = d / "decisions.jsonl"
        err_path = d / "proxy.stderr"
        cmd = [sys.executable, "-m", "hydraguard", "run", "--upstream", upstream_url,
               "--listen", f"127.0.0.1:{port}", "--log", str(log_path)]
        if rules:
            cmd += ["--rules", str(rules)]
        cmd += extra or []
        e = {**os.environ, "HYDRAGUARD_ACCOUNT_SECRET": "test-secret", **(env or {})}
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=e, cwd=ROOT)
        p = Proxy(port, proc, log_path, err_path)
        try:
            def healthy() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"proxy exited {proc.returncode}: {p.stderr()}")
                r = httpx.get(f"{p.url}/__hydraguard/healthz", timeout=1)
                return r.status_code == 200
            wait_until(healthy, 30, "proxy health")
            yield p
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
