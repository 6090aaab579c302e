"""The decision log: one complete, flushed JSON line per request, to a rotating file or stdout."""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from .addresses import IPAddress, prefix


def truncate_ip(ip: IPAddress | None) -> str | None:
    """/24 for IPv4, /64 for IPv6 (as a network string), the same prefix as everywhere."""
    return prefix(ip)


def iso_time(ts: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class DecisionLog:
    """Appends JSON lines. Size-based rotation (`path.1` ... `path.N`); '-' writes to stdout.

    Every `write` is a single `os.write` of one whole line to a file opened with O_APPEND:
    nothing waits in a buffer, so no line is split or lost when the process stops. After
    `close`, a file log reopens on the next write (a late flow still gets its line).
    """

    _ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)

    def __init__(self, path: str = "-", max_bytes: int = 100 << 20, backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        if path != "-":
            self._open()

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        for i in range(self.backups - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        if self.backups > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._open()

    def write(self, record: dict[str, Any]) -> None:
        data = (self._ENCODER.encode(record) + "\n").encode("utf-8", "surrogateescape")
        with self._lock:
            if self.path == "-":
                sys.stdout.write(data.decode("utf-8", "surrogateescape"))
                sys.stdout.flush()
                return
            if self._fd is None:
                self._open()
            if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            assert self._fd is not None
            view = memoryview(data)
            while view:  # a regular file takes it in one write; loop for completeness
                n = os.write(self._fd, view)
                view = view[n:]
            self._size += len(data)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
