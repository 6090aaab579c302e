"""A streaming ``multipart/form-data`` reader: fed the body chunk by chunk, it hands the bytes
of the file part to a callback as they arrive and keeps the small fields (``purpose``). Memory:
one chunk plus the length of the boundary, and fields up to ``max_field`` bytes each.

Strict where a lenient reader could be fooled about the file the upstream will store: a
second file part, part headers over 16 KiB or a body that does not end with the closing
boundary set ``error``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["MultipartReader", "boundary_of"]

MAX_HEADERS = 16 * 1024
_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,200})"|([^;,\s]{1,200}))', re.I)
_PARAM = re.compile(r';\s*([a-z*]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))', re.I)


def boundary_of(content_type: str | None) -> str | None:
    """The boundary of a ``multipart/form-data`` content type, else None."""
    if not content_type or not content_type.lower().lstrip().startswith("multipart/form-data"):
        return None
    m = _BOUNDARY.search(content_type)
    return (m.group(1) or m.group(2)) if m else None


class MultipartReader:
    """See the module doc. ``feed(chunk)`` (``b""`` at the end); then ``fields``,
    ``file_name``, ``finished`` and ``error``."""

    def __init__(self, boundary: str, on_file: Callable[[bytes], None], *,
                 file_field: str = "file", max_field: int = 1024) -> None:
        b = boundary.encode("latin-1")
        self._first = b"--" + b
        self._delim = b"\r\n--" + b
        self._on_file = on_file
        self._file_field = file_field
        self._max_field = max_field
        self._buf = b""
        self._state = "preamble"
        self._part: str | None = None  # "file", a field name, or None (ignored part)
        self._value = b""
        self.fields: dict[str, list[str]] = {}  # every value of each small field
        self.file_name: str | None = None
        self.file_parts = 0
        self.finished = False
        self.error: str | None = None

    def feed(self, chunk: bytes) -> None:
        if self.error is not None or self.finished:
            return
        if not chunk:
            if self._state != "end":
                self.error = "multipart body ends before its closing boundary"
            self.finished = self._state == "end"
            return
        self._buf += chunk
        while self.error is None and self._step():
            pass

    def _step(self) -> bool:
        """Advance by one state; False when more bytes are needed."""
        buf, st = self._buf, self._state
        if st == "preamble":
            i = buf.find(self._first)
            if i < 0:
                self._buf = buf[-len(self._first):]
                return False
            self._buf, self._state = buf[i + len(self._first):], "delimiter"
            return True
        if st == "delimiter":
            if len(buf) < 2:
                return False
            if buf.startswith(b"--"):
                self._state, self._buf = "end", b""
                return False
            tail = buf.lstrip(b" \t")  # transport padding, then CRLF
            if len(tail) < 2:
                if len(buf) > 256:
                    self.error = "bad multipart delimiter line"
                return False
            if not tail.startswith(b"\r\n"):
                self.error = "bad multipart delimiter line"
                return False
            self._buf, self._state = tail[2:], "headers"
            return True
        if st == "headers":
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > MAX_HEADERS:
                    self.error = "multipart part headers too long"
                return False
            self._start_part(buf[:i].decode("utf-8", "replace"))
            self._buf, self._state = buf[i + 4:], "body"
            return True
        if st == "body":
            i = buf.find(self._delim)
            if i < 0:
                keep = len(self._delim) - 1
                if len(buf) > keep:
                    self._data(buf[:-keep])
                    self._buf = buf[-keep:]
                return False
            after = buf[i + len(self._delim):]
            tail = after.lstrip(b" \t")
            if len(tail) < 2 and len(after) < 256:
                self._data(buf[:i])  # is it a delimiter? wait for its next bytes
                self._buf = buf[i:]
                return False
            if not (tail.startswith(b"--") or tail.startswith(b"\r\n")):
                # the boundary followed by something else is data (RFC 2046): a reader that
                # stopped here would see less of the file than the upstream stores
                self._data(buf[:i + 1])
                self._buf = buf[i + 1:]
                return True
            self._data(buf[:i])
            self._end_part()
            self._buf, self._state = after, "delimiter"
            return True
        self._buf = b""  # "end": the epilogue is ignored
        return False

    def _start_part(self, head: str) -> None:
        name = filename = None
        for line in head.split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() != "content-disposition":
                continue
            for m in _PARAM.finditer(value):
                v = m.group(2) if m.group(2) is not None else m.group(3)
                if m.group(1).lower() == "name":
                    name = v
                elif m.group(1).lower() == "filename":
                    filename = v
        if name == self._file_field and filename is not None:
            self.file_parts += 1
            if self.file_parts > 1:
                self.error = "more than one file part"
            self.file_name = filename
            self._part = "file"
        elif name is not None and filename is None:
            self._part, self._value = name, b""
        else:
            self._part = None

    def _data(self, data: bytes) -> None:
        if not data or self._part is None:
            return
        if self._part == "file":
            self._on_file(data)
        elif len(self._value) <= self._max_field:
            self._value += data[: self._max_field + 1 - len(self._value)]

    def _end_part(self) -> None:
        if self._part == "file":
            self._on_file(b"")
        elif self._part is not None:
            self.fields.setdefault(self._part, []).append(
                self._value[: self._max_field].decode("utf-8", "replace"))
        self._part = None
