"""Starting a real `hydraguard run` process on a free local port (the demo, tests, benches)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


@contextlib.contextmanager
def proxy_process(upstream: str, rules: str | Path | None, log_path: Path, stderr_path: Path,
                  *, env: Mapping[str, str] | None = None, extra: Sequence[str] = (),
                  timeout: float = 30.0) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run `hydraguard run` in front of `upstream`; yields (process, base URL) once healthy."""
    port = free_port()
    cmd = [sys.executable, "-m", "hydraguard", "run", "--upstream", upstream,
           "--listen", f"127.0.0.1:{port}", "--log", str(log_path)]
    if rules:
        cmd += ["--rules", str(rules)]
    cmd += list(extra)
    url = f"http://127.0.0.1:{port}"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=ROOT)
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"proxy exited {proc.returncode}: "
                                   + stderr_path.read_text(errors="replace")[-2000:])
            return http_status(url + "/__hydraguard/healthz") == 200

        deadline = time.monotonic() + timeout
        while not _check(healthy):
            if time.monotonic() > deadline:
                raise TimeoutError("proxy did not become healthy")
            time.sleep(0.05)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _check(pred: Callable[[], bool]) -> bool:
    """pred(), with connection errors meaning "not yet" (a dead process still raises)."""
    try:
        return pred()
    except (OSError, urllib.error.URLError):
        return False
