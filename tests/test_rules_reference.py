"""rules/README.md documents every field of the schema (whatever sections exist now)."""

from __future__ import annotations

import re

from hydraguard.authoring.reference import (
    BEGIN,
    END,
    condition_paths,
    render_reference,
    walk,
)
from hydraguard.policy import parse_policy
from hydraguard.policy.load import ROOT
from hydraguard_dev.procs import ROOT as REPO

README = REPO / "rules" / "README.md"


def test_every_schema_field_is_documented():
    text = README.read_text(encoding="utf-8")
    paths = [p for p, _ in walk(ROOT)] + [p for p, _ in condition_paths()]
    assert len(paths) > 40
    missing = [p for p in paths if f"`{p}`" not in text]
    assert not missing, (f"fields not documented in rules/README.md: {missing}; run "
                         "python -m hydraguard.authoring.reference --write rules/README.md")


def test_generated_reference_is_current_and_has_no_stale_fields():
    text = README.read_text(encoding="utf-8")
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert block == render_reference().strip(), (
        "rules/README.md reference is out of date: run "
        "python -m hydraguard.authoring.reference --write rules/README.md")
    documented = set(re.findall(r"^#+ `([^`]+)`$", block, re.M))
    assert documented == {p for p, _ in walk(ROOT)}


def test_every_field_has_a_meaning():
    undocumented = [p for p, f in walk(ROOT) if not (f.doc or getattr(f.spec, "doc", ""))]
    assert not undocumented


def test_recipes_are_valid_rules():
    text = README.read_text(encoding="utf-8")
    recipes = text[text.index("## Recipes"):text.index("## Reference")]
    blocks = re.findall(r"```yaml\n(.*?)```", recipes, re.S)
    assert len(blocks) == 8
    for b in blocks:
        parse_policy(b, "README.md")
