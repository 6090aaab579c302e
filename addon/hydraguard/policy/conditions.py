"""The `when:` condition language: compiled once into small predicate objects.

A condition is a mapping; several keys in one mapping must all hold. Keys:
`all`, `any`, `not`, `client_ip`, `account`, `api`, `model`, `path`, `stream`, `country`,
`registered_country`, `subdivision`, `signal`, `score`. Each compiled node answers
`test(facts) -> bool` and `explain(facts) -> str` (for `hydraguard explain`).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from .isocodes import IsoCode
from .schema import INVALID, Errors, ListOf, MapOf, Network, Num, Spec, Str, _type_name
from .yamlpos import Where

API_NAMES = ("anthropic.messages", "openai.chat", "openai.responses", "openai.completions",
             "anthropic.complete", "openai.embeddings", "anthropic.batches", "openai.batches")


class FactsView(Protocol):
    """What conditions read from the request facts."""

    client_ip: Any
    account: str | None
    api: str | None
    model: str | None
    path: str
    stream: bool
    geo: Any
    signals: dict[str, Any]


class Condition(Protocol):
    def test(self, f: FactsView) -> bool: ...
    def explain(self, f: FactsView) -> str: ...


@dataclass(frozen=True, slots=True)
class All:
    parts: tuple[Condition, ...]

    def test(self, f: FactsView) -> bool:
        return all(p.test(f) for p in self.parts)

    def explain(self, f: FactsView) -> str:
        return "all(" + "; ".join(p.explain(f) for p in self.parts) + ")"


@dataclass(frozen=True, slots=True)
class Any_:
    parts: tuple[Condition, ...]

    def test(self, f: FactsView) -> bool:
        return any(p.test(f) for p in self.parts)

    def explain(self, f: FactsView) -> str:
        return "any(" + "; ".join(p.explain(f) for p in self.parts) + ")"


@dataclass(frozen=True, slots=True)
class Not:
    part: Condition

    def test(self, f: FactsView) -> bool:
        return not self.part.test(f)

    def explain(self, f: FactsView) -> str:
        return f"not({self.part.explain(f)})"


def _mark(ok: bool) -> str:
    return "yes" if ok else "no"


@dataclass(frozen=True, slots=True)
class InNetworks:
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def test(self, f: FactsView) -> bool:
        ip = f.client_ip
        return ip is not None and any(ip in n for n in self.networks)

    def explain(self, f: FactsView) -> str:
        return f"client_ip {f.client_ip} in {len(self.networks)} network(s): {_mark(self.test(f))}"


@dataclass(frozen=True, slots=True)
class InSet:
    """A fact (by attribute name, or a geo field) is one of a set of values."""

    name: str
    values: frozenset[str]
    get: Callable[[FactsView], Any]

    def test(self, f: FactsView) -> bool:
        v = self.get(f)
        if isinstance(v, tuple):
            return any(x in self.values for x in v)
        return v in self.values

    def explain(self, f: FactsView) -> str:
        return f"{self.name} {self.get(f)!r} in {sorted(self.values)}: {_mark(self.test(f))}"


@dataclass(frozen=True, slots=True)
class Glob:
    name: str
    patterns: tuple[str, ...]
    regex: re.Pattern[str]
    get: Callable[[FactsView], Any]

    def test(self, f: FactsView) -> bool:
        v = self.get(f)
        return v is not None and self.regex.fullmatch(v) is not None

    def explain(self, f: FactsView) -> str:
        return f"{self.name} {self.get(f)!r} matches {list(self.patterns)}: {_mark(self.test(f))}"


@dataclass(frozen=True, slots=True)
class Equals:
    name: str
    value: Any
    get: Callable[[FactsView], Any]

    def test(self, f: FactsView) -> bool:
        return self.get(f) == self.value

    def explain(self, f: FactsView) -> str:
        return f"{self.name} {self.get(f)!r} == {self.value!r}: {_mark(self.test(f))}"


OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class SignalTest:
    """`signal: name` (truthy) or `signal: {name, op, value}`."""

    name: str
    op: str | None = None
    value: Any = None

    def test(self, f: FactsView) -> bool:
        v = f.signals.get(self.name)
        if self.op is None:
            return bool(v)
        if v is None:
            return False
        try:
            return OPS[self.op](v, self.value)
        except TypeError:
            return False

    def explain(self, f: FactsView) -> str:
        v = f.signals.get(self.name)
        cond = "is set" if self.op is None else f"{self.op} {self.value!r}"
        return f"signal {self.name}={v!r} {cond}: {_mark(self.test(f))}"


@dataclass(frozen=True, slots=True)
class Score:
    """Weighted sum of signals (true = 1, numbers as they are) compared with a threshold."""

    weights: tuple[tuple[str, float], ...]
    threshold: float

    def total(self, f: FactsView) -> float:
        s = 0.0
        for name, w in self.weights:
            v = f.signals.get(name)
            if isinstance(v, bool):
                s += w if v else 0.0
            elif isinstance(v, int | float):
                s += w * v
            elif v:
                s += w
        return s

    def test(self, f: FactsView) -> bool:
        return self.total(f) >= self.threshold

    def explain(self, f: FactsView) -> str:
        return f"score {self.total(f):g} >= {self.threshold:g}: {_mark(self.test(f))}"


def _geo(attr: str) -> Callable[[FactsView], Any]:
    def get(f: FactsView) -> Any:
        return getattr(f.geo, attr, None) if f.geo is not None else None

    return get


def _globs(patterns: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


_STRS = ListOf(Str(), min_len=1, allow_scalar=True)
_COUNTRIES = ListOf(IsoCode("country"), min_len=1, allow_scalar=True)
_SUBDIVISIONS = ListOf(IsoCode("subdivision"), min_len=1, allow_scalar=True)


class ConditionSpec(Spec):
    """Schema and compiler for `when:` (recursive)."""

    type_label = "condition"
    doc = "A condition: a mapping of tests that must all hold."
    KEYS: ClassVar[dict[str, str]] = {
        "all": "list of conditions that must all hold",
        "any": "list of conditions of which at least one holds",
        "not": "a condition that must not hold",
        "client_ip": "the true client address is in one of these CIDRs",
        "account": "the account hash is one of these",
        "api": f"the API is one of: {', '.join(API_NAMES)}, or 'other'",
        "model": "the model matches one of these glob patterns",
        "path": "the request path matches one of these glob patterns",
        "stream": "the request asks for a streamed response (true/false)",
        "country": "the GeoIP country (ISO 3166-1 alpha-2, checked) is one of these",
        "registered_country": "the GeoIP registered country (ISO 3166-1 alpha-2) is one of "
        "these",
        "represented_country": "the GeoIP represented country (e.g. a military base) is one "
        "of these",
        "subdivision": "a GeoIP subdivision (ISO 3166-2, checked, e.g. UA-43) is one of these",
        "signal": "a signal is set, or {name, op, value} compares it",
        "score": "{weights: {signal: weight}, threshold: N}: weighted sum >= threshold",
    }

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        from .schema import did_you_mean

        if not isinstance(value, dict) or not value:
            got = _type_name(value)
            return errors.add(where, f"{path}: expected a condition mapping, got {got}")
        kw = getattr(value, "key_where", {})
        vw = getattr(value, "value_where", {})
        parts: list[Any] = []
        for key, v in value.items():
            at, sub = vw.get(key, where), f"{path}.{key}"
            if key not in self.KEYS:
                hint = did_you_mean(key, list(self.KEYS))
                parts.append(errors.add(kw.get(key, where), f"{path}: unknown test {key!r}{hint}"))
                continue
            parts.append(self._leaf(key, v, at, sub, errors))
        if any(p is INVALID for p in parts):
            return INVALID
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def _leaf(self, key: str, v: Any, at: Where, path: str, errors: Errors) -> Any:
        if key in ("all", "any"):
            items = ListOf(self, min_len=1).check(v, at, path, errors)
            if items is INVALID:
                return INVALID
            return All(items) if key == "all" else Any_(items)
        if key == "not":
            inner = self.check(v, at, path, errors)
            return INVALID if inner is INVALID else Not(inner)
        if key == "client_ip":
            nets = ListOf(Network(), min_len=1, allow_scalar=True).check(v, at, path, errors)
            return INVALID if nets is INVALID else InNetworks(nets)
        if key in ("account", "api"):
            spec = ListOf(Str(choices=(*API_NAMES, "other")), min_len=1, allow_scalar=True) \
                if key == "api" else _STRS
            vals = spec.check(v, at, path, errors)
            if vals is INVALID:
                return INVALID
            return InSet(key, frozenset(vals), operator.attrgetter(key))
        if key in ("model", "path"):
            vals = _STRS.check(v, at, path, errors)
            if vals is INVALID:
                return INVALID
            return Glob(key, vals, _globs(vals), operator.attrgetter(key))
        if key == "stream":
            if not isinstance(v, bool):
                return errors.add(at, f"{path}: expected true or false, got {_type_name(v)}")
            return Equals("stream", v, operator.attrgetter("stream"))
        if key in ("country", "registered_country", "represented_country", "subdivision"):
            spec = _SUBDIVISIONS if key == "subdivision" else _COUNTRIES
            vals = spec.check(v, at, path, errors)
            if vals is INVALID:
                return INVALID
            codes = frozenset(vals)
            attr = "subdivisions" if key == "subdivision" else key
            return InSet(key, codes, _geo(attr))
        if key == "signal":
            return self._signal(v, at, path, errors)
        return self._score(v, at, path, errors)

    def _signal(self, v: Any, at: Where, path: str, errors: Errors) -> Any:
        if isinstance(v, str):
            return SignalTest(v)
        if not isinstance(v, dict):
            return errors.add(at, f"{path}: expected a signal name or {{name, op, value}}")
        unknown = set(v) - {"name", "op", "value"}
        if unknown or "name" not in v:
            return errors.add(at, f"{path}: needs keys name, op, value (got {sorted(v)})")
        op = v.get("op", ">=")
        if op not in OPS:
            return errors.add(at, f"{path}.op: {op!r} is not one of {', '.join(OPS)}")
        return SignalTest(str(v["name"]), op, v.get("value", True))

    def _score(self, v: Any, at: Where, path: str, errors: Errors) -> Any:
        if not isinstance(v, dict) or set(v) != {"weights", "threshold"}:
            return errors.add(at, f"{path}: expected {{weights: {{signal: weight}}, threshold: N}}")
        weights = MapOf(Num()).check(v["weights"], at, f"{path}.weights", errors)
        threshold = Num().check(v["threshold"], at, f"{path}.threshold", errors)
        if weights is INVALID or threshold is INVALID:
            return INVALID
        return Score(tuple(weights.items()), float(threshold))
