"""Test helpers for the budget engine: fake clock, Redis availability, throwaway servers.

Redis tests skip when Redis is unreachable, unless HYDRAGUARD_REQUIRE_REDIS=1 (then they
fail).  The URL comes from REDIS_URL (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


class FakeClock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


def _ping(url: str, timeout: float = 0.5) -> str | None:
    """None if reachable, else the reason."""
    try:
        c = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            c.ping()
        finally:
            c.close()
    except Exception as exc:  # any failure means "not usable"
        return f"{type(exc).__name__}: {exc}"
    return None


_checked: dict[str, str | None] = {}


def require_redis(url: str = REDIS_URL) -> str:
    """Return the URL, or skip (fail with HYDRAGUARD_REQUIRE_REDIS=1) if unreachable."""
    if url not in _checked:
        _checked[url] = _ping(url)
    reason = _checked[url]
    if reason is not None:
        msg = f"Redis at {url} unreachable ({reason}); set REDIS_URL or start redis-server"
        if os.environ.get("HYDRAGUARD_REQUIRE_REDIS") == "1":
            pytest.fail(msg + " [HYDRAGUARD_REQUIRE_REDIS=1]")
        pytest.skip(msg)
    return url


def unique_prefix() -> str:
    return f"hgtest-{uuid.uuid4().hex[:12]}"


def delete_prefix(url: str, prefix: str) -> int:
    c = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        keys = list(c.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            c.delete(*keys)
        return len(keys)
    finally:
        c.close()


def keys_with_prefix(url: str, prefix: str) -> list[str]:
    c = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2, decode_responses=True)
    try:
        return sorted(c.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        c.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throwaway ``redis-server`` (no persistence) that can be stopped and restarted."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server not on PATH")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while _ping(self.url, 0.2) is not None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.skip(f"could not start redis-server on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    srv = RedisServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
