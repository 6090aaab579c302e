"""A throwaway 3-master Redis Cluster on free loopback ports (tests and bench).

``redis_cluster()`` starts three ``redis-server --cluster-enabled yes`` processes in a
temporary directory, joins them with ``redis-cli --cluster create`` (no replicas), waits for
``cluster_state:ok`` on every node and yields the seed URL and the node URLs; everything is
stopped at the end.  Without redis-server/redis-cli the test is skipped with the reason
(failed with HYDRAGUARD_REQUIRE_REDIS=1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis


def _free_port() -> int:
    # a cluster node also listens on port + 10000 (the cluster bus)
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@dataclass
class Cluster:
    """A running cluster: ``url`` is the seed (first node), ``nodes`` every master."""

    url: str
    nodes: list[str]

    def masters_holding(self, pattern: str) -> dict[str, int]:
        """node URL -> number of keys matching ``pattern`` it holds."""
        out = {}
        for n in self.nodes:
            c = redis.Redis.from_url(n)
            try:
                out[n] = sum(1 for _ in c.scan_iter(match=pattern, count=1000))
            finally:
                c.close()
        return out


def missing_reason() -> str | None:
    """Why a cluster cannot be started here, or None."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (needed for the Redis Cluster tests)"
    return None


def skip_or_fail(reason: str) -> None:
    import pytest

    if os.environ.get("HYDRAGUARD_REQUIRE_REDIS") == "1":
        pytest.fail(reason + " [HYDRAGUARD_REQUIRE_REDIS=1]")
    pytest.skip(reason)


@contextlib.contextmanager
def redis_cluster(n: int = 3) -> Iterator[Cluster]:
    """Start an ``n``-master cluster (see module doc); stop it at the end."""
    tmp = tempfile.mkdtemp(prefix="hg-rcluster-")
    procs: list[subprocess.Popen] = []
    ports = []
    try:
        for _ in range(n):
            port = _free_port()
            ports.append(port)
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            _wait(lambda p=port: redis.Redis(port=p).ping(), f"redis-server :{port}")
        subprocess.run(["redis-cli", "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        for port in ports:
            _wait(lambda p=port: _state_ok(redis.Redis(port=p).execute_command("CLUSTER INFO")),
                  f"cluster_state:ok on :{port}")
        urls = [f"redis://127.0.0.1:{p}" for p in ports]
        yield Cluster(urls[0], urls)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(n: int = 3) -> Iterator[Cluster]:
    """`redis_cluster(n)` for a test: skipped (or failed, in CI) when it cannot start here."""
    reason = missing_reason()
    if reason:
        skip_or_fail(reason)
    with redis_cluster(n) as c:
        yield c


def _state_ok(info) -> bool:
    if isinstance(info, dict):
        return info.get("cluster_state") in ("ok", b"ok")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def _wait(check, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what} ({last})")
