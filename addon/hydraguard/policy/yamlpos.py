"""YAML loading that keeps every value's file:line:column.

`load_located(text, filename)` returns plain Python values where mappings are `LocDict`
and sequences `LocList`: both remember where they and their items start, so every later
check can say exactly where a problem is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True, slots=True, order=True)
class Where:
    """A position in a rules file (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class LocDict(dict):
    """A mapping that knows where it and each of its keys/values start."""

    where: Where
    key_where: dict[str, Where]
    value_where: dict[str, Where]


class LocList(list):
    """A sequence that knows where it and each of its items start."""

    where: Where
    item_where: list[Where]


class YamlError(Exception):
    """The text is not YAML; `where` tells the place."""

    def __init__(self, where: Where, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def _where(file: str, node: yaml.Node) -> Where:
    mark = node.start_mark
    return Where(file, mark.line + 1, mark.column + 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (YAML silently keeps the last one)."""


def _build(file: str, node: yaml.Node, loader: _Loader) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out = LocDict()
        out.where = _where(file, node)
        out.key_where, out.value_where = {}, {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise YamlError(_where(file, key_node), "mapping keys must be plain scalars")
            key = str(key)
            if key in out:
                first = out.key_where[key]
                raise YamlError(
                    _where(file, key_node), f"duplicate key {key!r} (first at line {first.line})"
                )
            out[key] = _build(file, value_node, loader)
            out.key_where[key] = _where(file, key_node)
            out.value_where[key] = _where(file, value_node)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LocList()
        seq.where = _where(file, node)
        seq.item_where = []
        for item in node.value:
            seq.append(_build(file, item, loader))
            seq.item_where.append(_where(file, item))
        return seq
    return loader.construct_object(node, deep=True)


def load_located(text: str, filename: str) -> Any:
    """Parse one YAML document, keeping positions. Raises `YamlError` with file:line:col."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _build(filename, node, loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = Where(filename, mark.line + 1, mark.column + 1) if mark else Where(filename, 1, 1)
        raise YamlError(where, f"invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:  # pragma: no cover - defensive
        raise YamlError(Where(filename, 1, 1), f"invalid YAML: {e}") from None
    finally:
        loader.dispose()
