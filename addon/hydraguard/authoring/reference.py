"""The rule reference (rules/README.md) generated from the schema, and the list of every
field path the schema has (the reference test checks that each is documented).

    python -m hydraguard.authoring.reference --write rules/README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..policy.conditions import ConditionSpec
from ..policy.schema import Field, ListOf, MapOf, Spec, Struct

BEGIN = "<!-- BEGIN GENERATED REFERENCE (python -m hydraguard.authoring.reference --write " \
    "rules/README.md) -->"
END = "<!-- END GENERATED REFERENCE -->"


def _children(spec: Any) -> Iterator[tuple[str | None, Any]]:
    """Nested specs: (path segment or None when transparent, spec)."""
    if isinstance(spec, Struct):
        return
    if isinstance(spec, ListOf):
        yield None, spec.item
    elif isinstance(spec, MapOf):
        yield "<name>", spec.value
    else:  # other Spec kinds written elsewhere: look for nested specs generically
        for v in vars(spec).values() if hasattr(spec, "__dict__") else ():
            if isinstance(v, Spec) and not isinstance(v, ConditionSpec):
                yield None, v


def walk(spec: Any, prefix: str = "") -> Iterator[tuple[str, Field]]:
    """Every (dotted path, Field) of a Struct, recursively; lists are transparent, mappings
    with free keys add `<name>`; conditions are documented once (see `condition_paths`)."""
    if isinstance(spec, Struct):
        for name, f in spec.fields.items():
            path = f"{prefix}.{name}" if prefix else name
            yield path, f
            yield from walk(f.spec, path)
        return
    for seg, child in _children(spec):
        yield from walk(child, f"{prefix}.{seg}" if seg else prefix)


def condition_paths() -> list[tuple[str, str]]:
    return [(f"when.{k}", doc) for k, doc in ConditionSpec.KEYS.items()]


def _type(spec: Any) -> str:
    t = getattr(spec, "type_label", "value")
    choices = getattr(spec, "choices", None)
    if isinstance(spec, Struct):
        return "mapping"
    if isinstance(spec, ConditionSpec):
        return "condition"
    if choices:
        return f"one of {', '.join(choices)}"
    if isinstance(spec, ListOf) and getattr(spec.item, "choices", None):
        return f"list of: {', '.join(spec.item.choices)}"
    return str(t)


def _yaml(v: Any) -> str:
    if isinstance(v, tuple):
        v = list(v)
    return json.dumps(v, default=str)


def _example(name: str, f: Field) -> str | None:
    spec = f.spec
    if f.example is not None:
        v = f.example
    elif f.default not in (None, (), "", {}):
        v = f.default
    elif getattr(spec, "choices", None):
        v = spec.choices[0]
    elif isinstance(spec, ListOf) and getattr(spec.item, "choices", None):
        v = [spec.item.choices[0]]
    else:
        return None
    return f"{name}: {_yaml(v)}"


def render_reference(root: Struct | None = None) -> str:
    """Markdown for every field of the schema (and the condition tests)."""
    if root is None:
        from ..policy.load import ROOT

        root = root or ROOT
    out: list[str] = []
    for path, f in walk(root):
        depth = path.count(".")
        name = path.rsplit(".", 1)[-1]
        out.append(f"{'#' * min(3 + depth, 6)} `{path}`")
        out.append("")
        meta = [_type(f.spec)]
        if f.required:
            meta.append("required")
        elif f.default not in (None, ()):
            meta.append(f"default `{_yaml(f.default)}`")
        else:
            meta.append("optional")
        out.append(f"*{'; '.join(meta)}*")
        out.append("")
        doc = f.doc or getattr(f.spec, "doc", "") or ""
        if doc:
            out.append(doc)
            out.append("")
        ex = _example(name, f)
        if ex:
            out.append(f"Example: `{ex}`")
            out.append("")
    out.append("### Condition tests (`when:`, `exempt:`, and `when:` of clusters)")
    out.append("")
    for path, doc in condition_paths():
        out.append(f"- `{path}`: {doc}")
    out.append("")
    return "\n".join(out)


def splice(readme: str, generated: str) -> str:
    a, b = readme.index(BEGIN), readme.index(END)
    return readme[: a + len(BEGIN)] + "\n\n" + generated + "\n" + readme[b:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", help="README to update in place (between the markers)")
    a = p.parse_args(argv)
    text = render_reference()
    if a.write:
        path = Path(a.write)
        path.write_text(splice(path.read_text(encoding="utf-8"), text), encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
