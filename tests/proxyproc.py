"""Real processes for end-to-end tests: the stand-in upstream and `hydraguard run` (mitmdump)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hydraguard.procs import ROOT, free_port, proxy_process, wait_until

__all__ = ["ROOT", "Proxy", "Upstream", "free_port", "proxy", "upstream", "wait_until"]


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
        log_path, err_path = d / "decisions.jsonl", d / "proxy.stderr"
        e = {"HYDRAGUARD_ACCOUNT_SECRET": "test-secret", **(env or {})}
        with proxy_process(upstream_url, rules, log_path, err_path, env=e,
                           extra=extra or ()) as (proc, url):
            yield Proxy(int(url.rsplit(":", 1)[1]), proc, log_path, err_path)
