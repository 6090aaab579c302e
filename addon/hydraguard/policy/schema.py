"""A small strict schema language for the rules file.

Every spec checks a located YAML value (see `yamlpos`), converts it, and reports each problem
with file:line:column into a shared `Errors` list, so all errors come out at once. Structs
reject unknown keys with a "did you mean" hint. Specs carry `doc` and `example` so the rule
reference (rules/README.md) can be checked against them.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .yamlpos import LocDict, LocList, Where


class Invalid:
    """Marker for a value that failed its check (an error has been recorded)."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID = Invalid()


@dataclass(order=True, frozen=True, slots=True)
class PolicyIssue:
    """One problem in a rules file."""

    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class Errors(list):
    """All problems found so far."""

    def add(self, where: Where, message: str) -> Invalid:
        self.append(PolicyIssue(where, message))
        return INVALID


def _type_name(value: Any) -> str:
    if isinstance(value, LocDict | dict):
        return "a mapping"
    if isinstance(value, LocList | list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    return f"a string ({value!r})"


def did_you_mean(word: str, choices: list[str]) -> str:
    """' (did you mean "x"?)' or ''."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class Spec:
    """Base class: `check(value, where, path, errors)` returns the converted value or INVALID."""

    doc: str = ""
    type_label: str = "value"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        raise NotImplementedError


@dataclass
class Str(Spec):
    choices: tuple[str, ...] | None = None
    non_empty: bool = True
    type_label: str = "string"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return errors.add(where, f"{path}: expected a string, got {_type_name(value)}")
        value = str(value)
        if self.non_empty and not value:
            return errors.add(where, f"{path}: must not be empty")
        if self.choices is not None and value not in self.choices:
            hint = did_you_mean(value, list(self.choices))
            options = ", ".join(self.choices)
            return errors.add(where, f"{path}: {value!r} is not one of: {options}{hint}")
        return value


@dataclass
class Num(Spec):
    min: float | None = None
    max: float | None = None
    integer: bool = False

    @property
    def type_label(self) -> str:  # type: ignore[override]
        return "integer" if self.integer else "number"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        ok = isinstance(value, int) if self.integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            return errors.add(where, f"{path}: expected {self.type_label}, got {_type_name(value)}")
        if self.min is not None and value < self.min:
            return errors.add(where, f"{path}: {value} is below the minimum {self.min:g}")
        if self.max is not None and value > self.max:
            return errors.add(where, f"{path}: {value} is above the maximum {self.max:g}")
        return value


def Int(min: float | None = None, max: float | None = None) -> Num:
    """An integer in [min, max]."""
    return Num(min=min, max=max, integer=True)


@dataclass
class Bool(Spec):
    type_label: str = "boolean"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        if not isinstance(value, bool):
            return errors.add(where, f"{path}: expected true or false, got {_type_name(value)}")
        return value


@dataclass
class Network(Spec):
    """An IP network in CIDR notation (a bare address means a single host)."""

    type_label: str = "CIDR"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        if not isinstance(value, str):
            return errors.add(where, f"{path}: expected a CIDR string, got {_type_name(value)}")
        try:
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            return errors.add(where, f"{path}: {value!r} is not an IP network (CIDR)")


@dataclass
class Custom(Spec):
    """A string converted by `parse` (which raises ValueError with a message)."""

    parse: Callable[[str], Any] = str
    type_label: str = "string"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return errors.add(where, f"{path}: expected a string, got {_type_name(value)}")
        try:
            return self.parse(str(value))
        except ValueError as e:
            return errors.add(where, f"{path}: {e}")


@dataclass
class ListOf(Spec):
    item: Spec = field(default_factory=Str)
    min_len: int = 0
    allow_scalar: bool = False  # a single value stands for a one-item list

    @property
    def type_label(self) -> str:  # type: ignore[override]
        return f"list of {self.item.type_label}"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        if not isinstance(value, list):
            if self.allow_scalar and value is not None and not isinstance(value, dict):
                got = self.item.check(value, where, path, errors)
                return INVALID if got is INVALID else (got,)
            return errors.add(where, f"{path}: expected a list, got {_type_name(value)}")
        if len(value) < self.min_len:
            return errors.add(where, f"{path}: needs at least {self.min_len} item(s)")
        item_where = getattr(value, "item_where", None) or [where] * len(value)
        out = [
            self.item.check(v, w, f"{path}[{i}]", errors)
            for i, (v, w) in enumerate(zip(value, item_where, strict=True))
        ]
        return INVALID if any(v is INVALID for v in out) else tuple(out)


@dataclass
class MapOf(Spec):
    """A mapping with free-form keys and values of one spec."""

    value: Spec = field(default_factory=Str)
    key: Spec | None = None

    @property
    def type_label(self) -> str:  # type: ignore[override]
        return f"mapping of {self.value.type_label}"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        if not isinstance(value, dict):
            return errors.add(where, f"{path}: expected a mapping, got {_type_name(value)}")
        out: dict[Any, Any] = {}
        bad = False
        for k, v in value.items():
            kw = getattr(value, "key_where", {}).get(k, where)
            vw = getattr(value, "value_where", {}).get(k, where)
            key = self.key.check(k, kw, f"{path}.{k}", errors) if self.key else k
            got = self.value.check(v, vw, f"{path}.{k}", errors)
            bad |= key is INVALID or got is INVALID
            out[key] = got
        return INVALID if bad else out


@dataclass
class Field:
    """One key of a Struct."""

    spec: Spec
    required: bool = False
    default: Any = None
    doc: str = ""
    example: Any = None


class Checked(dict):
    """The converted contents of a Struct, with the positions of the source mapping."""

    where: Where
    key_where: Mapping[str, Where]

    def at(self, key: str) -> Where:
        """Where `key` was written (or the mapping itself when it took its default)."""
        return self.key_where.get(key, self.where)


@dataclass
class Struct(Spec):
    """A mapping with a fixed set of keys; unknown keys are errors."""

    fields: dict[str, Field] = field(default_factory=dict)
    doc: str = ""
    type_label: str = "mapping"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        if value is None:
            value = LocDict()
            value.where, value.key_where, value.value_where = where, {}, {}
        if not isinstance(value, dict):
            return errors.add(where, f"{path}: expected a mapping, got {_type_name(value)}")
        key_where = getattr(value, "key_where", {})
        value_where = getattr(value, "value_where", {})
        out = Checked()
        out.where = getattr(value, "where", where)
        out.key_where = key_where
        bad = False
        for key in value:
            if key not in self.fields:
                hint = did_you_mean(key, list(self.fields))
                errors.add(key_where.get(key, where),
                           f"{path or 'top level'}: unknown key {key!r}{hint}")
                bad = True
        for name, f in self.fields.items():
            sub = f"{path}.{name}" if path else name
            if name in value:
                got = f.spec.check(value[name], value_where.get(name, where), sub, errors)
                bad |= got is INVALID
                out[name] = got
            elif f.required:
                errors.add(out.where, f"{path or 'file'}: missing required key {name!r}")
                bad = True
            else:
                out[name] = f.default
        return INVALID if bad else out


@dataclass
class AnyValue(Spec):
    """Any YAML value, taken as written (e.g. a request body in a policy test)."""

    type_label: str = "any value"

    def check(self, value: Any, where: Where, path: str, errors: Errors) -> Any:
        return value
