"""Content events of SSE streams measured without a JSON parse (used by sse.StreamMeter).

Most events of a stream carry a piece of text and nothing else the meter reads. They are
recognised by their shape, one regular expression each, and their text is measured where it
lies in the bytes: its byte length for ASCII without escapes, else that one string decoded.
The count is the one a full parse gives (``StreamMeter`` counts after ``json.loads``); an
event of any other shape, or one that may carry usage, an error or the end of the stream,
is parsed in full. A string that a full parse would reject (a bad escape, bad UTF-8) makes
its event count 0, as the parse would.

Shapes (compact JSON as the providers write it; one optional space after ``:`` and ``,``):
- Anthropic: ``content_block_delta`` with one ``text`` / ``partial_json`` / ``thinking``
  field; ``content_block_stop`` (counts 0).
- OpenAI chat: a chunk of flat fields (strings without escapes, numbers, booleans, null)
  around ``choices`` of one choice whose ``delta`` is empty or holds ``content`` (and
  ``role``). A ``usage`` object, an ``error`` field, tool calls, refusals or reasoning
  text make it a parsed chunk.
- OpenAI Responses: a ``*.delta`` event of flat fields with one ``delta`` string; events of
  every type but ``response.completed`` / ``incomplete`` / ``failed`` and ``error`` carry
  nothing the meter reads and count 0 unparsed (a type written first, as OpenAI does).

``EVENTS`` holds, per API, the same content shape with its SSE framing (``event:`` and
``data:`` lines and the blank line): a chunk that is exactly one such event is measured
with one match; ``PLAIN_EVENTS`` the same for plain ASCII text (most of it), whose length
is read off the match without even copying the text.
"""

from __future__ import annotations

import json
import re

_STR = rb'"((?:[^"\\\x00-\x1f]++|\\.)*+)"'  # a JSON string's body (escapes checked later)
_C = rb":\x20?"
_S = rb",\x20?"
_SIMPLE = rb'(?:"[^"\\\x00-\x1f]*"|-?\d+(?:\.\d+)?|null|true|false|\[\])'


def _field(*not_keys: str) -> bytes:
    """A flat field whose key is none of `not_keys`."""
    ban = "|".join(not_keys).encode()
    return rb'"(?!(?:' + ban + rb')")[a-z_]+"' + _C + _SIMPLE


_PLAIN = rb'"([\x20\x21\x23-\x5b\x5d-\x7e]*+)"'  # printable ASCII, no escape: len = chars


def _a_delta(string: bytes) -> bytes:
    return (rb'\{"type"' + _C + rb'"content_block_delta"' + _S + rb'"index"' + _C + rb"\d+"
            + _S + rb'"delta"' + _C + rb'\{"type"' + _C + rb'"[a-z_]+"' + _S
            + rb'"(?:text|partial_json|thinking)"' + _C + string + rb"\}\}")


_CF = _field("error", "choices", "delta")


def _chat(string: bytes) -> bytes:
    return (rb"\{(?:" + _CF + _S + rb')*"choices"' + _C + rb'\[\{"index"' + _C + rb"\d+" + _S
            + rb'"delta"' + _C + rb'\{(?:(?:"role"' + _C + rb'"assistant"' + _S
            + rb')?"content"' + _C + string + rb")?\}(?:" + _S + _CF + rb")*\}\](?:" + _S + _CF
            + rb")*\}")


_RF = _field("type", "delta")


def _r_delta(string: bytes) -> bytes:
    return (rb'\{"type"' + _C + rb'"(?:[a-z_]+\.)+delta"(?:' + _S + _RF + rb")*" + _S
            + rb'"delta"' + _C + string + rb"(?:" + _S + _RF + rb")*\}")


def _events(string: bytes) -> dict[str, re.Pattern[bytes]]:
    return {
        "anthropic.messages": re.compile(rb"event: content_block_delta\ndata: "
                                         + _a_delta(string) + rb"\n\n"),
        "openai.chat": re.compile(rb"data: " + _chat(string) + rb"\n\n"),
        "openai.responses": re.compile(rb"event: response\.[a-z_.]+\ndata: "
                                       + _r_delta(string) + rb"\n\n"),
    }


_A_STOP = re.compile(rb'\{"type"' + _C + rb'"content_block_stop"' + _S + rb'"index"' + _C
                     + rb"\d+\}")
_R_PARSED = frozenset({b"response.completed", b"response.incomplete", b"response.failed",
                       b"error"})
_R_TYPE = re.compile(rb'\{"type"' + _C + rb'"([^"\\]*)"')
_DATA = {"anthropic.messages": re.compile(_a_delta(_STR)), "openai.chat": re.compile(_chat(_STR)),
         "openai.responses": re.compile(_r_delta(_STR))}
EVENTS = _events(_STR)
"""Per API: one whole content event, framing included; group 1 is its text (or None)."""
PLAIN_EVENTS = _events(_PLAIN)
"""The same with text of printable ASCII and no escape: group 1's byte length is its length."""


def text_len(raw: bytes | None) -> int:
    """Characters of a JSON string body (between the quotes; None: no string): 0 if it is
    not valid (a full parse would drop its event)."""
    if not raw:
        return 0
    if b"\\" in raw:
        try:
            return len(json.loads(b'"' + raw + b'"'))
        except ValueError:
            return 0
    if raw.isascii():
        return len(raw)
    try:
        return len(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return 0


def anthropic_chars(data: bytes) -> int | None:
    """Text of an Anthropic content event; None: parse it."""
    m = _DATA["anthropic.messages"].fullmatch(data)
    if m is not None:
        return text_len(m.group(1))
    return 0 if _A_STOP.fullmatch(data) is not None else None


def chat_chars(data: bytes) -> int | None:
    """Text of an OpenAI chat chunk that carries only content; None: parse it."""
    m = _DATA["openai.chat"].fullmatch(data)
    return None if m is None else text_len(m.group(1))


def responses_chars(data: bytes) -> int | None:
    """Text of a Responses event the meter only counts (or skips); None: parse it."""
    m = _DATA["openai.responses"].fullmatch(data)
    if m is not None:
        return text_len(m.group(1))
    t = _R_TYPE.match(data)
    if t is None or t.group(1) in _R_PARSED or t.group(1).endswith(b".delta"):
        return None
    return 0


NEVER = re.compile(rb"(?!)")
"""Matches nothing (an unknown API has no content shape)."""


def none(data: bytes) -> None:
    """The scanner of an unknown API: every event is parsed."""
    return None


SCANNERS = {"anthropic.messages": anthropic_chars, "openai.chat": chat_chars,
            "openai.responses": responses_chars}
