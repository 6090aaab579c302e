"""Metering of streamed (SSE) responses, chunk by chunk, without delaying them.

A :class:`StreamMeter` sees every chunk of one response body, forwards it at once and parses
SSE lines on the side (lines end in ``\\n`` or ``\\r\\n``; chunks may split anywhere). Only with
``hide_usage_chunk`` does it hold back an unterminated line (at most ``HOLD_MAX`` bytes) so it
can drop the usage-only chunk the proxy asked for on the client's behalf; a torn last line
(no newline before the end) is then never forwarded, which SSE clients would discard anyway.
An empty chunk marks the end of the stream but is harmless mid-stream.

Usage rules: Anthropic takes ``message_start`` and then the LAST ``message_delta`` (its counts
are cumulative; fields it omits keep their ``message_start`` value). OpenAI chat takes the
usage chunk; Responses the usage of ``response.completed`` / ``incomplete`` / ``failed``. Until
then output is estimated as ``ceil(delivered_chars / 4)`` of text, tool-argument and thinking
deltas, and input comes from ``message_start`` or the ``input_tokens_est`` given by the caller.

Cost: only the events that can carry usage, an error or the end of the stream are parsed as
JSON. The content events (most of a stream) are recognised by their shape and their text is
measured where it lies in the bytes (``_scan.py``): about 1-2 µs an event instead of 10-20.
The counts are the same as a full parse would give for every well-formed event; an event whose
shape is not the usual one is parsed in full.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import _scan
from .request import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES
from .usage import Usage, anthropic_usage, chat_usage, count_of, responses_usage

MAX_LINE = 8 * 1024 * 1024
"""Longer SSE lines are skipped by the parser (still forwarded)."""
HOLD_MAX = 64 * 1024
"""With ``hide_usage_chunk``, a partial line longer than this is forwarded without waiting."""

_ANTHROPIC_DELTA_FIELDS = ("text", "partial_json", "thinking")
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_RESPONSES_DONE = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _error_text(err: Any, fallback: str) -> str:
    if isinstance(err, dict):
        kind = err.get("type") or err.get("code") or "error"
        msg = err.get("message")
        return f"{kind}: {msg}" if isinstance(msg, str) and msg else str(kind)
    if isinstance(err, str) and err:
        return err
    return fallback


def _is_usage_only(line: bytes) -> bool:
    """True for the ``data:`` line of an OpenAI chat chunk with no choices and a usage object."""
    if not line.startswith(b"data:") or _EMPTY_CHOICES.search(line) is None:
        return False
    try:
        obj = json.loads(line[5:])
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


class StreamMeter:
    """Meters one streamed response; see the module docstring for the rules."""

    __slots__ = (
        "_buf", "_chars", "_data", "_drop_blank", "_event", "_hide", "_hold", "_idle",
        "_input_est", "_passing", "_plain", "_reported", "_scan", "_skip_line", "_start",
        "_whole", "api", "completed", "error",
    )

    def __init__(self, api: str, hide_usage_chunk: bool = False, input_tokens_est: int = 0):
        self.api = api
        self.completed = False
        self.error: str | None = None
        self._hide = bool(hide_usage_chunk) and api == OPENAI_CHAT
        self._input_est = count_of(input_tokens_est) or 0
        self._buf = b""  # unterminated line, for the parser
        self._skip_line = False  # parser: current line overflowed MAX_LINE
        self._event = ""
        self._data: list[bytes] = []
        self._chars = 0  # delivered text characters
        self._start: Usage | None = None  # Anthropic message_start usage
        self._reported: Usage | None = None  # final usage from the provider
        self._hold = b""  # hide mode: unterminated line not yet forwarded
        self._passing = False  # hide mode: current line is being forwarded as it comes
        self._drop_blank = False  # hide mode: drop the blank line after a dropped chunk
        self._scan = _scan.SCANNERS.get(api, _scan.none)  # content events, unparsed
        self._whole = _scan.EVENTS.get(api, _scan.NEVER).fullmatch  # one content event
        self._plain = _scan.PLAIN_EVENTS.get(api, _scan.NEVER).fullmatch  # ... of plain text
        self._idle = True  # no partial line or event pending

    # -- results -----------------------------------------------------------------------------

    @property
    def usage_reported(self) -> bool:
        """True if the output count came from the provider, False if estimated."""
        return self._reported is not None

    @property
    def usage(self) -> Usage:
        """Best knowledge of the usage so far (reported, else estimated)."""
        if self._reported is not None:
            return self._reported
        est_out = -(-self._chars // 4)
        start = self._start
        if start is not None:
            return Usage(
                start.input_tokens,
                max(start.output_tokens, est_out),
                start.cache_creation_input_tokens,
                start.cache_read_input_tokens,
            )
        return Usage(self._input_est, est_out)

    # -- feeding -----------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk (``b""`` at end of stream); return the bytes to forward now."""
        if type(chunk) is not bytes:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                return b""
            chunk = bytes(chunk)
        if self._idle and chunk.endswith(b"\n\n"):
            m = self._plain(chunk)  # the usual chunk: one content event of plain text
            if m is not None:
                self._chars += m.end(1) - m.start(1)
                return self._filter(chunk) if self._hide else chunk
        try:
            self._parse(chunk)
        except Exception as e:  # metering must never break the stream
            self.error = self.error or f"meter failure: {type(e).__name__}"
        if not self._hide:
            return chunk
        return self._filter(chunk)

    def _parse(self, chunk: bytes) -> None:
        if self._idle and chunk.endswith(b"\n\n"):
            # whole events and nothing pending: the same result as line by line
            m = self._whole(chunk)  # one content event
            if m is not None:
                self._chars += _scan.text_len(m.group(1))
                return
            if b"\r" not in chunk:
                self._blocks(chunk)
                return
        self._idle = False
        self._by_line(chunk)
        self._idle = not (self._buf or self._data or self._event or self._skip_line)

    def _by_line(self, chunk: bytes) -> None:
        if not chunk:
            # End of stream (or an empty chunk mid-stream: nothing here may lose data). An event
            # whose lines are complete but lacks its blank line is read; a torn line is not.
            if not self._buf and not self._skip_line:
                self._line(b"")
            return
        if b"\n" not in chunk:
            if not self._skip_line:
                self._buf += chunk
                if len(self._buf) > MAX_LINE:
                    self._buf, self._skip_line = b"", True
            return
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if self._skip_line:  # the first line is the tail of an oversized line: ignore it
            self._skip_line = False
            lines[0] = b"data:"
        elif self._buf:
            lines[0] = self._buf + lines[0]
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            self._line(line)
        self._buf = rest
        if len(rest) > MAX_LINE:
            self._buf, self._skip_line = b"", True

    def _blocks(self, chunk: bytes) -> None:
        """Whole events (no partial line, nothing pending), each taken at once when it is an
        event line and one data line."""
        scan = self._scan
        for block in chunk[:-2].split(b"\n\n"):
            if block.startswith(b"event:"):
                nl = block.find(b"\n")
                if nl < 0 or not block.startswith(b"data:", nl + 1) or \
                        block.find(b"\n", nl + 1) >= 0:
                    self._lines(block)
                    continue
                name = block[6:nl].strip()
                data = block[nl + 6 :]
            elif block.startswith(b"data:") and b"\n" not in block:
                name = b""
                data = block[5:]
            else:
                self._lines(block)
                continue
            if data[:1] == b" ":
                data = data[1:]
            n = scan(data) if data and name != b"ping" else 0
            if n is None:
                self._dispatch(name.decode("utf-8", "replace"), data)
            else:
                self._chars += n

    def _lines(self, block: bytes) -> None:
        """The lines of one event (no blank line inside), then the end of the event."""
        for line in block.split(b"\n"):
            self._line(line)
        self._line(b"")

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data or self._event:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                event = self._event
                self._data = []
                self._event = ""
                self._dispatch(event, data)
            return
        if line.startswith(b"data:"):
            v = line[5:]
            self._data.append(v[1:] if v.startswith(b" ") else v)
        elif line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")

    def _dispatch(self, event: str, data: bytes) -> None:
        if event == "ping" or not data:
            return
        if self.api == OPENAI_CHAT and data.strip() == b"[DONE]":
            self.completed = True
            return
        n = self._scan(data)
        if n is not None:  # a content event measured without parsing it
            self._chars += n
            return
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(obj, dict):
            return
        if self.api == ANTHROPIC_MESSAGES:
            self._anthropic(event, obj)
        elif self.api == OPENAI_CHAT:
            self._chat(obj)
        elif self.api == OPENAI_RESPONSES:
            self._responses(obj)

    def _anthropic(self, event: str, obj: dict[str, Any]) -> None:
        etype = obj.get("type") or event
        if etype == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                for f in _ANTHROPIC_DELTA_FIELDS:
                    v = delta.get(f)
                    if isinstance(v, str):
                        self._chars += len(v)
        elif etype == "message_start":
            msg = obj.get("message")
            u = msg.get("usage") if isinstance(msg, dict) else None
            if isinstance(u, dict):
                self._start = anthropic_usage(u)
        elif etype == "message_delta":
            u = obj.get("usage")
            if isinstance(u, dict):
                base = self._reported or self._start or Usage()
                out = count_of(u.get("output_tokens"))

                def pick(key: str, old: int) -> int:
                    v = count_of(u.get(key))
                    return old if v is None else v

                self._reported = Usage(
                    pick("input_tokens", base.input_tokens),
                    base.output_tokens if out is None else out,
                    pick("cache_creation_input_tokens", base.cache_creation_input_tokens),
                    pick("cache_read_input_tokens", base.cache_read_input_tokens),
                )
        elif etype == "message_stop":
            self.completed = True
        elif etype == "error" or event == "error":
            self.error = _error_text(obj.get("error"), "error event")

    def _chat(self, obj: dict[str, Any]) -> None:
        if "error" in obj and obj["error"] is not None:
            self.error = _error_text(obj["error"], "error chunk")
            return
        u = obj.get("usage")
        if isinstance(u, dict):
            self._reported = chat_usage(u)
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return
        for ch in choices:
            delta = ch.get("delta") if isinstance(ch, dict) else None
            if not isinstance(delta, dict):
                continue
            for f in ("content", "refusal", "reasoning_content", "reasoning"):
                v = delta.get(f)
                if isinstance(v, str):
                    self._chars += len(v)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        for f in ("name", "arguments"):
                            v = fn.get(f)
                            if isinstance(v, str):
                                self._chars += len(v)

    def _responses(self, obj: dict[str, Any]) -> None:
        etype = obj.get("type")
        if not isinstance(etype, str):
            return
        if etype.endswith(".delta"):
            v = obj.get("delta")
            if isinstance(v, str):
                self._chars += len(v)
        elif etype in _RESPONSES_DONE:
            resp = obj.get("response")
            if isinstance(resp, dict):
                u = resp.get("usage")
                if isinstance(u, dict):
                    self._reported = responses_usage(u)
                if etype == "response.failed":
                    self.error = _error_text(resp.get("error"), "response failed")
            if etype != "response.failed":
                self.completed = True
        elif etype == "error":
            err = obj.get("error")
            if not isinstance(err, dict):
                err = {"type": obj.get("code") or "error", "message": obj.get("message")}
            self.error = _error_text(err, "error event")

    # -- hiding the injected usage chunk -----------------------------------------------------

    def _filter(self, chunk: bytes) -> bytes:
        if not chunk:  # keep a torn line: SSE clients discard it at the end anyway
            return b""
        if (not self._hold and not self._drop_blank and chunk.endswith(b"\n")
                and _EMPTY_CHOICES.search(chunk) is None):
            self._passing = False  # whole lines, none of them a usage-only chunk
            return chunk
        if b"\n" not in chunk:
            if self._passing:
                return chunk
            self._hold += chunk
            if len(self._hold) > HOLD_MAX:
                out, self._hold, self._passing = self._hold, b"", True
                return out
            return b""
        data = self._hold + chunk if self._hold else chunk
        self._hold = b""
        out: list[bytes] = []
        pos = 0
        while (nl := data.find(b"\n", pos)) != -1:
            raw = data[pos : nl + 1]
            pos = nl + 1
            if self._passing:
                self._passing = False
                out.append(raw)
                continue
            line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            if self._drop_blank:
                self._drop_blank = False
                if not line:
                    continue
            if _is_usage_only(line):
                self._drop_blank = True
                continue
            out.append(raw)
        rest = data[pos:]
        if len(rest) > HOLD_MAX:
            out.append(rest)
            self._passing = True
        else:
            self._hold = rest
        return b"".join(out)


def make_stream_meter(
    api: str, hide_usage_chunk: bool = False, *, input_tokens_est: int = 0
) -> StreamMeter:
    """A meter for one streamed response of ``api``.

    ``hide_usage_chunk``: the proxy added ``include_usage`` for an OpenAI chat client that did
    not ask; the usage-only chunk (and its blank line) is removed from the forwarded bytes.
    ``input_tokens_est``: input count to report if the provider never sends one (OpenAI).
    """
    return StreamMeter(api, hide_usage_chunk, input_tokens_est)
