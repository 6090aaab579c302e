"""The decision log: one complete, flushed JSON line per request, to a rotating file or stdout."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

from .facts import IPAddress


def truncate_ip(ip: IPAddress | None) -> str | None:
    """/24 for IPv4, /48 for IPv6 (as a network string)."""
    if ip is None:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def iso_time(ts: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class DecisionLog:
    """Appends JSON lines. Size-based rotation (`path.1` ... `path.N`); '-' writes to stdout.

    Every `write` is one `write()` call of a whole line followed by a flush, so a line is
    never split or lost in a buffer when the process stops.
    """

    def __init__(self, path: str = "-", max_bytes: int = 100 << 20, backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self._size = 0
        if path != "-":
            self._open()

    def _open(self) -> None:
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = self._fh.tell()

    def _rotate(self) -> None:
        assert self._fh is not None
        self._fh.close()
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
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
        with self._lock:
            if self._fh is None:
                sys.stdout.write(line)
                sys.stdout.flush()
                return
            if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._fh.write(line)
            self._fh.flush()
            self._size += len(line.encode("utf-8")) if not line.isascii() else len(line)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
