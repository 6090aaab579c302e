"""Reading decision logs for the report: rotated sets, gzip, stdin; one bounded line at a time.

`DecisionLog` rotates `LOG` to `LOG.1`, `LOG.1` to `LOG.2`, ... (decision_log.py). A report on
`LOG` reads `LOG.N` ... `LOG.1`, then `LOG`: oldest first. Every file of the set is opened
before the first line is read, so a rotation while the report runs renames files under open
handles and no line is read twice or skipped. Files ending in `.gz` (log shipping often
compresses rotated files: `LOG.1.gz`) are read through gzip.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE = 1 << 20  # a longer line is skipped (counted as malformed), never held in memory
MAX_ROTATED = 1000  # LOG.1 ... LOG.1000 at most


@dataclass(slots=True)
class Line:
    """One line of a log: its file, 1-based number, and bytes (None: longer than MAX_LINE)."""

    source: str
    number: int
    data: bytes | None


def rotated_set(path: str) -> list[str]:
    """`path` and its rotated files (`path.1`, `path.1.gz`, ...), oldest first. The numbers
    must be consecutive from 1 (as DecisionLog keeps them); `path` itself may be missing when
    rotated files exist (the report then reads only those)."""
    older: list[str] = []
    for i in range(1, MAX_ROTATED + 1):
        for cand in (f"{path}.{i}", f"{path}.{i}.gz"):
            if os.path.isfile(cand):
                older.append(cand)
                break
        else:
            break
    files = older[::-1]
    if os.path.exists(path) or not files:
        files.append(path)  # a missing path with no rotated files: the open says so
    return files


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # closed by LogReader


class LogReader:
    """Lines of several logs in order. Opening happens in the constructor (OSError names the
    file); iterate for `Line`s; `close` (or a `with` block) closes the files."""

    def __init__(self, paths: list[str], *, rotated: bool = True) -> None:
        names: list[str] = []
        for p in paths:
            names += rotated_set(p) if rotated and p != "-" else [p]
        self.names = names
        self._files: list[tuple[str, BinaryIO]] = []
        try:
            for n in names:
                self._files.append((n, _open(n)))
        except OSError:
            self.close()
            raise

    def __iter__(self) -> Iterator[Line]:
        for name, fh in self._files:
            label = "<stdin>" if name == "-" else name
            yield from read_lines(fh, label)

    def close(self) -> None:
        for name, fh in self._files:
            if name != "-":
                with contextlib.suppress(OSError):
                    fh.close()
        self._files = []

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_lines(fh: BinaryIO, label: str, max_line: int = MAX_LINE) -> Iterator[Line]:
    """The lines of ``fh``; a line longer than ``max_line`` bytes comes as ``data=None`` and
    is skipped in pieces (never read whole). A damaged gzip stream ends the file with a
    ``data=None`` line."""
    n = 0
    while True:
        try:
            chunk = fh.readline(max_line + 1)
        except (OSError, EOFError, zlib.error):
            n += 1
            yield Line(label, n, None)
            return
        if not chunk:
            return
        n += 1
        if len(chunk) > max_line and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):  # skip the rest of the long line
                try:
                    chunk = fh.readline(max_line)
                except (OSError, EOFError, zlib.error):
                    break
            yield Line(label, n, None)
            continue
        yield Line(label, n, chunk)
