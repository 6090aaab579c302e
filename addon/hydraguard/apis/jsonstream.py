"""Reading large JSON bodies piece by piece, in bounded memory.

- `iter_object_array(data, key)`: the elements of one array member of a top-level JSON object
  (``{"requests": [ ... ]}``), decoded one at a time. The bytes are decoded to text in windows
  of ``WINDOW`` bytes, so memory is the body itself (held by the proxy anyway), one window of
  text and the element being decoded, never a tree of the whole body.
- `LineSplitter`: complete lines of a byte stream fed in chunks of any size (JSONL), each at
  most ``max_line`` bytes; a longer line is skipped and counted.

Both are strict where it matters for metering: a duplicate key holding the array, trailing
garbage, or a value that is not JSON raise `JSONStreamError`.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import Any

__all__ = ["JSONStreamError", "LineSplitter", "iter_object_array"]

WINDOW = 1 << 20
_WS = " \t\r\n"
_DECODER = json.JSONDecoder()


class JSONStreamError(ValueError):
    """The body is not the JSON expected (the message says where)."""


class _Text:
    """Text of a byte body, decoded window by window (see `iter_object_array`)."""

    def __init__(self, data: bytes | bytearray | memoryview, window: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._window = window
        self._dec = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self.s = ""
        self.i = 0

    @property
    def exhausted(self) -> bool:
        return self._pos >= len(self._data)

    def more(self, at_least: int = 0) -> bool:
        """Append at least one more window of text (and at least ``at_least`` characters'
        worth of bytes); False at the end of the body."""
        if self.exhausted:
            return False
        if self.i > self._window:  # drop what was consumed
            self.s, self.i = self.s[self.i:], 0
        n = max(self._window, at_least)
        end = min(self._pos + n, len(self._data))
        try:
            self.s += self._dec.decode(self._data[self._pos:end], end >= len(self._data))
        except UnicodeDecodeError as e:
            raise JSONStreamError(f"body is not valid UTF-8 ({e.reason})") from None
        self._pos = end
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end)."""
        while True:
            s, i, n = self.s, self.i, len(self.s)
            while i < n and s[i] in _WS:
                i += 1
            self.i = i
            if i < n:
                return s[i]
            if not self.more():
                return ""

    def expect(self, ch: str) -> None:
        got = self.peek()
        if got != ch:
            raise JSONStreamError(f"expected {ch!r}, found {got or 'the end'!r}")
        self.i += 1

    def value(self) -> Any:
        """The next JSON value; reads more text until it is complete."""
        self.peek()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.s, self.i)
            except json.JSONDecodeError as e:
                # the value runs past the text decoded so far: read more (geometrically);
                # an error well inside the text is a real one
                cut = e.msg.startswith("Unterminated string") or e.pos >= len(self.s) - 32
                if cut and self.more(at_least=len(self.s) - self.i):
                    continue
                raise JSONStreamError(f"body is not valid JSON: {e.msg}") from None
            except RecursionError:
                raise JSONStreamError("body is nested too deeply") from None
            # a number (or literal) at the window edge may continue in the next window
            if end >= len(self.s) and not isinstance(obj, dict | list | str) and self.more():
                continue
            self.i = end
            return obj


def iter_object_array(data: bytes | bytearray | memoryview, key: str, *,
                      window: int = WINDOW) -> Iterator[Any]:
    """The elements of the array ``key`` of the top-level object ``data`` (see module doc).
    Other members are decoded and dropped. Raises JSONStreamError on bad JSON, when ``key``
    is missing, is not an array or is given twice."""
    t = _Text(data, window)
    t.expect("{")
    seen = False
    if t.peek() == "}":
        t.i += 1
    else:
        while True:
            if t.peek() != '"':
                raise JSONStreamError("expected a member name")
            name = t.value()
            t.expect(":")
            if name == key:
                if seen:
                    raise JSONStreamError(f"{key!r} given twice")
                seen = True
                t.expect("[")
                if t.peek() == "]":
                    t.i += 1
                else:
                    while True:
                        yield t.value()
                        nxt = t.peek()
                        t.i += 1
                        if nxt == "]":
                            break
                        if nxt != ",":
                            raise JSONStreamError(f"expected ',' or ']' in {key!r}")
            else:
                t.value()
            nxt = t.peek()
            t.i += 1
            if nxt == "}":
                break
            if nxt != ",":
                raise JSONStreamError("expected ',' or '}'")
    if t.peek() != "":
        raise JSONStreamError("data after the JSON object")
    if not seen:
        raise JSONStreamError(f"{key!r} missing")


class LineSplitter:
    """Complete lines of a chunked byte stream (see module doc). ``feed`` returns the lines
    completed by a chunk (without their ``\\n`` / ``\\r\\n``); ``b""`` ends the stream and
    returns the last line if it had no newline."""

    __slots__ = ("_buf", "_skip", "max_line", "skipped")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = b""
        self._skip = False
        self.skipped = 0  # lines longer than max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            rest, self._buf = self._buf, b""
            if self._skip:
                self._skip = False
                return []
            return [rest.rstrip(b"\r")] if rest else []
        if b"\n" not in chunk:
            if not self._skip:
                self._buf += chunk
                if len(self._buf) > self.max_line:
                    self._buf, self._skip = b"", True
                    self.skipped += 1
            return []
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if self._skip:
            self._skip = False
            lines.pop(0)
        elif self._buf:
            lines[0] = self._buf + lines[0]
        out = []
        for line in lines:
            if len(line) > self.max_line:
                self.skipped += 1
            else:
                out.append(line[:-1] if line.endswith(b"\r") else line)
        self._buf = rest
        if len(rest) > self.max_line:
            self._buf, self._skip = b"", True
            self.skipped += 1
        return out
