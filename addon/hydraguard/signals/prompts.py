"""Prompt patterns: named phrase/regex patterns matched on the system prompt and the last
user turn (signals `prompt.<name>`). Near-duplicate templates: signals/templates.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..policy.catalogue import DEFAULT_PATTERNS  # the shipped patterns; re-exported here

__all__ = ["DEFAULT_PATTERNS", "PromptPatterns"]

Clock = Callable[[], float]

_MAX_GATE_HITS = 16  # windows searched per gate word and text


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    regex: re.Pattern[str]
    system: bool
    user: bool
    lowered: bool  # match against the lower-cased text
    gates: tuple[str, ...]  # literal words that must occur (lower case); () = always search
    window: int  # characters either side of a gate hit searched; 0 = the whole text


def _phrase_regex(phrase: str) -> str:
    words = phrase.lower().split()
    body = r"\s+".join(re.escape(w) for w in words)
    pre = r"\b" if re.match(r"\w", words[0]) else ""
    post = r"\b" if re.search(r"\w$", words[-1]) else ""
    return pre + body + post


class PromptPatterns:
    """Named patterns compiled once, matched against the system text and the last user text.

    Each spec is (name, pattern[, flags]). pattern: a phrase (str; case-insensitive, any run of
    whitespace matches any run), a regex string (flag "regex": matched against the lower-cased
    text, so write it in lower case), or a compiled `re.Pattern` (matched against the original
    text as is). flags: a string of space/comma separated words: "phrase" (default), "regex",
    "system" / "user" (only that text; default both), "gate=w1|w2" (search only if one of these
    lower-case literals occurs; phrases gate on their longest word automatically) and
    "window=N" (with gates: search only N characters either side of each gate hit); or an int of
    `re` flags, meaning a regex on the original text compiled with them. Invalid specs are
    skipped and listed in `.errors`.
    """

    def __init__(self, patterns: Iterable[Sequence[object]] | None = None) -> None:
        self.errors: list[str] = []
        self._patterns: list[_Compiled] = []
        for spec in DEFAULT_PATTERNS if patterns is None else patterns:
            try:
                self._patterns.append(self._compile(spec))
            except (re.error, TypeError, ValueError, IndexError) as e:
                self.errors.append(f"{str(spec)[:80]}: {e}")
        # lower-case a text only when a case-folded pattern reads it (system / user)
        self._need_lower = (any(p.lowered and p.system for p in self._patterns),
                            any(p.lowered and p.user for p in self._patterns))

    @staticmethod
    def _compile(spec: Sequence[object]) -> _Compiled:
        name, pattern = str(spec[0]), spec[1]
        flags = spec[2] if len(spec) > 2 else ""
        if isinstance(pattern, re.Pattern):
            return _Compiled(name, pattern, True, True, False, (), 0)
        if not isinstance(pattern, str):
            raise TypeError("pattern must be str or re.Pattern")
        if isinstance(flags, int):
            return _Compiled(name, re.compile(pattern, flags), True, True, False, (), 0)
        if not isinstance(flags, str):
            raise TypeError("flags must be str or int")
        words = flags.replace(",", " ").split()
        opts = {w.split("=", 1)[0].lower(): w.split("=", 1)[1] if "=" in w else "" for w in words}
        unknown = set(opts) - {"regex", "phrase", "system", "user", "gate", "window"}
        if unknown:
            raise ValueError(f"unknown flags {sorted(unknown)}")
        system = user = True
        if "system" in opts or "user" in opts:
            system, user = "system" in opts, "user" in opts
        gates = tuple(g.lower() for g in opts.get("gate", "").split("|") if g)
        window = int(opts.get("window") or 0)
        if "regex" in opts:
            regex = re.compile(pattern)
        else:
            if not pattern.split():
                raise ValueError("empty phrase")
            regex = re.compile(_phrase_regex(pattern))
            if not gates:
                gates = (max(pattern.lower().split(), key=len),)
        return _Compiled(name, regex, system, user, True, gates, window)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._patterns]

    @staticmethod
    def _search(p: _Compiled, text: str) -> bool:
        if not p.gates:
            return p.regex.search(text) is not None
        if not p.window:
            return any(g in text for g in p.gates) and p.regex.search(text) is not None
        w = p.window
        search = p.regex.search
        for g in p.gates:
            i = text.find(g)
            hits = 0
            while i >= 0 and hits < _MAX_GATE_HITS:
                lo = max(0, i - w)
                if search(text, lo, i + len(g) + w):
                    return True
                hits += 1
                i = text.find(g, i + len(g))
        return False

    def match(self, system_text: str | None, last_user_text: str | None) -> frozenset[str]:
        """Names of the patterns found in the system text or the last user text."""
        texts = []
        for t, need_lower in zip((system_text, last_user_text), self._need_lower, strict=True):
            t = t if isinstance(t, str) else ""
            texts.append((t, t.lower() if need_lower and t else t))
        (sys_raw, sys_low), (usr_raw, usr_low) = texts
        found = set()
        for p in self._patterns:
            if (p.user and usr_raw and self._search(p, usr_low if p.lowered else usr_raw)) or (
                p.system and sys_raw and self._search(p, sys_low if p.lowered else sys_raw)
            ):
                found.add(p.name)
        return frozenset(found)
