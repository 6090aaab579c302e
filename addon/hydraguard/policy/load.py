"""Rules file(s) -> validated `Policy`, or `PolicyError` with every problem at file:line:col."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .budget_sections import SECTIONS as BUDGET_SECTIONS
from .budget_sections import compile_budgets
from .conditions import ConditionSpec
from .indicator_sections import SECTIONS as INDICATOR_SECTIONS
from .indicator_sections import compile_indicators
from .model import ACTIONS, DENY_KINDS, GeoSettings, Policy, Rule
from .regions import GEOIP, REGION, compile_region
from .schema import (
    INVALID,
    Bool,
    Checked,
    Errors,
    Field,
    Int,
    ListOf,
    Num,
    PolicyIssue,
    Str,
    Struct,
    _type_name,
    did_you_mean,
)
from .settings_sections import LOG, SETTINGS, compile_log, compile_settings
from .yamlpos import Where, YamlError, load_located

RULE = Struct(
    doc="An access rule. Rules are evaluated in order; the first enforcing match decides.",
    fields={
        "id": Field(Str(), required=True, doc="Unique rule id (appears in the decision log)."),
        "description": Field(Str(non_empty=False), default="", doc="Free text."),
        "when": Field(ConditionSpec(), doc="Condition; a rule without one always matches."),
        "action": Field(Str(choices=ACTIONS), required=True,
                        doc="allow (stop evaluating, forward), deny (403) or throttle (429)."),
        "shadow": Field(Bool(), default=False,
                        doc="Decide and log, but let the request through."),
        "reason": Field(Str(non_empty=False), default="",
                        doc="Message returned to the client and logged."),
        "deny_as": Field(Str(choices=DENY_KINDS),
                         doc="Error flavour of a deny: permission, or region "
                         "(OpenAI unsupported_country_region_territory). Default: region "
                         "for rules with `region`, else permission."),
        "retry_after": Field(Num(min=1, max=86400), default=60,
                             doc="Seconds in retry-after for a throttle rule."),
        "region": Field(REGION, doc=REGION.doc),
        "exempt": Field(ConditionSpec(), doc="Condition under which this rule is skipped "
                        "(e.g. {account: [...]} or {client_ip: [...]})."),
    },
)

INCLUDE = ListOf(Str(), allow_scalar=True)
FORMAT_VERSION = 1  # the `version:` every rules file declares

ROOT = Struct(
    doc="A hydraguard rules file.",
    fields={
        "version": Field(
            Int(min=FORMAT_VERSION, max=FORMAT_VERSION), required=True,
            doc="Rules format version: every rules file declares `version: 1` (an empty or "
            "cut-off file then fails to load instead of meaning 'no rules').",
            example=FORMAT_VERSION),
        "include": Field(
            INCLUDE, default=(),
            doc="Further rules files or folders (relative to this file) loaded right after "
            "this one; a folder means its *.yaml files in name order.",
            example=["rules.d/"]),
        "settings": Field(SETTINGS, default=None, doc=SETTINGS.doc),
        "log": Field(LOG, default=None, doc=LOG.doc),
        "geoip": Field(GEOIP, doc=GEOIP.doc),
        **INDICATOR_SECTIONS,
        **BUDGET_SECTIONS,
        "rules": Field(ListOf(RULE), default=(), doc=RULE.doc),
    },
)

# Sections that concatenate over files (everything else may be defined by one file only).
MERGED = ("version", "include", "rules")
ITEMWISE = ("clusters", "budgets")  # list sections whose good items are cross-checked

class PolicyError(Exception):
    """The rules are invalid; `issues` holds every problem, sorted by place."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = sorted(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def _rule(c: Any) -> Rule:
    return Rule(
        id=c["id"], action=c["action"], when=c["when"], shadow=c["shadow"],
        reason=c["reason"],
        deny_as=c["deny_as"] or ("region" if c["region"] else "permission"),
        retry_after_s=float(c["retry_after"]),
        description=c["description"], where=c.where,
        region=compile_region(c["region"]) if c["region"] else None,
        exempt=c["exempt"],
    )


def _geoip(c: dict[str, Any] | None, base: Path) -> GeoSettings | None:
    if c is None:
        return None
    paths = tuple((role, str((base / c[role]).resolve()) if not os.path.isabs(c[role])
                   else c[role]) for role in ("location", "asn", "anonymous") if c.get(role))
    return GeoSettings(paths=paths, optional=c["optional"],
                       reload_interval=float(c["reload_interval"]), cache_size=c["cache_size"],
                       verify_seconds=float(c["verify_seconds"]),
                       max_age_days=float(c["max_age_days"]))


def _first_at(first: Where, here: Where) -> str:
    return f"line {first.line}" if first.file == here.file else str(first)


class _Assembler:
    """Reads one or more rules files into one policy, collecting every problem.

    Load order: the paths in the order given (a folder: its `*.yaml`/`*.yml` files sorted by
    name, not recursive); each file's `include:` entries are loaded right after that file, in
    the order written (depth first). Rules concatenate in load order; every other section may
    be defined by one file only; ids must be unique over all files.
    """

    def __init__(self) -> None:
        self.errors = Errors()
        self.files: list[str] = []
        self.loaded: dict[Path, Where | None] = {}
        self.sections: dict[str, Any] = {}
        self.section_where: dict[str, Where] = {}
        self.section_base: dict[str, Path] = {}
        self.rule_items: list[Any] = []  # Checked rule mappings, in load order
        self.ids: dict[str, Where] = {}
        self.root: Where | None = None
        self.cluster_ids: list[str] = []  # every cluster id written (valid items or not)

    # -- inputs --------------------------------------------------------------------------
    def add_path(self, path: Path, at: Where | None = None) -> None:
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.suffix in (".yaml", ".yml") and p.is_file())
            if not files:
                where = at or Where(str(path), 1, 1)
                self.errors.add(where, f"no *.yaml rules files in folder {path}")
            for f in files:
                self.add_path(f, at)
            return
        key = path.resolve()
        if key in self.loaded:
            first = self.loaded[key]
            where = at or Where(str(path), 1, 1)
            how = f" (first included at {first})" if first else ""
            self.errors.add(where, f"{path} is loaded twice{how}")
            return
        self.loaded[key] = at
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self.errors.add(at or Where(str(path), 1, 1), f"cannot read rules file: {e}")
            return
        self.add_text(text, str(path), is_file=True)

    def add_text(self, text: str, filename: str, *, is_file: bool = False) -> None:
        """Check one document. A file (`is_file`) must be a mapping that declares `version`:
        an empty or cut-off file is an error, never "no rules" (it may be caught mid-write)."""
        self.files.append(filename)
        if self.root is None:
            self.root = Where(filename, 1, 1)
        try:
            data = load_located(text, filename)
        except YamlError as e:
            self.errors.add(e.where, e.message)
            return
        top = Where(filename, 1, 1)
        if data is None:
            if is_file:
                what = "empty" if not text.strip() else "only comments"
                self.errors.add(top, f"the rules file is {what} (a rules file declares "
                                f"`version: {FORMAT_VERSION}`; that line alone means a file "
                                "without rules)")
            return
        if not isinstance(data, dict):
            self.errors.add(getattr(data, "where", top),
                            f"top level: expected a mapping, got {_type_name(data)}")
            return
        if is_file and "version" not in data:
            self.errors.add(getattr(data, "where", top),
                            f"top level: missing required key 'version': add `version: "
                            f"{FORMAT_VERSION}` (the rules format) at the top of the file")
        kw = getattr(data, "key_where", {})
        vw = getattr(data, "value_where", {})
        base = Path(filename).resolve().parent
        for key in data:
            if key not in ROOT.fields:
                hint = did_you_mean(key, list(ROOT.fields))
                self.errors.add(kw.get(key, top), f"top level: unknown key {key!r}{hint}")
        includes: Any = ()
        inc_where: list[Where] = []
        for name, f in ROOT.fields.items():
            if name not in data:
                continue
            at, value = vw.get(name, top), data[name]
            if name == "rules":
                self._rules(value, at)
                continue
            if name in ITEMWISE and isinstance(value, list):
                got = self._items(name, f.spec, value, at)
            else:
                got = f.spec.check(value, at, name, self.errors)
            if name == "include":
                includes = () if got is INVALID else got
                inc_where = getattr(value, "item_where", None) or [at] * len(includes)
                continue
            if name == "version":
                continue
            if name in self.section_where:
                first = self.section_where[name]
                self.errors.add(kw.get(name, top),
                                f"{name}: defined again (first at {_first_at(first, at)}); "
                                "only `rules` may be split over several files")
                continue
            self.sections[name] = got
            self.section_where[name] = kw.get(name, top)
            self.section_base[name] = base
        for inc, w in zip(includes, inc_where, strict=False):
            target = Path(inc)
            if not target.is_absolute():
                target = base / target
            if not target.exists():
                self.errors.add(w, f"include: {inc!r} not found ({target})")
                continue
            self.add_path(target, w)

    def _items(self, name: str, spec: Any, value: list, at: Where) -> tuple:
        """A list section checked item by item: INVALID stands in for a bad item (its error
        is recorded), so the cross-section checks can still run on the good ones."""
        item_where = getattr(value, "item_where", None) or [at] * len(value)
        if name == "clusters":
            self.cluster_ids += [str(v["id"]) for v in value
                                 if isinstance(v, dict) and isinstance(v.get("id"), str | int)]
        return tuple(spec.item.check(v, w, f"{name}[{i}]", self.errors)
                     for i, (v, w) in enumerate(zip(value, item_where, strict=True)))

    def _rules(self, value: Any, at: Where) -> None:
        if not isinstance(value, list):
            self.errors.add(at, f"rules: expected a list, got {_type_name(value)}")
            return
        item_where = getattr(value, "item_where", None) or [at] * len(value)
        for i, (item, w) in enumerate(zip(value, item_where, strict=True)):
            # Duplicate ids are found on the raw text, so they are reported even when the
            # rule has other errors.
            rid = item.get("id") if isinstance(item, dict) else None
            id_at = getattr(item, "key_where", {}).get("id", w) if rid is not None else w
            dup = False
            if isinstance(rid, str | int) and not isinstance(rid, bool):
                rid = str(rid)
                if rid in self.ids:
                    dup = True
                    self.errors.add(id_at, f"rules: duplicate rule id {rid!r} "
                                    f"(first at {_first_at(self.ids[rid], id_at)})")
                else:
                    self.ids[rid] = id_at
            c = RULE.check(item, w, f"rules[{i}]", self.errors)
            if c is not INVALID and not dup:
                self.rule_items.append(c)

    # -- result --------------------------------------------------------------------------
    def policy(self) -> Policy:
        errors = self.errors
        root = self.root or Where("<rules>", 1, 1)
        checked = Checked()
        checked.where = root
        checked.key_where = dict(self.section_where)
        for name, f in ROOT.fields.items():
            if name in MERGED:
                continue
            checked[name] = self.sections.get(name, f.default)
        checked["version"] = FORMAT_VERSION
        checked["include"] = ()
        checked["rules"] = tuple(self.rule_items)
        rules = tuple(_rule(c) for c in self.rule_items)
        indicators = budgets = None

        # Cross-section checks run whenever the sections they read are usable, so reference
        # errors come out together with schema errors elsewhere (a list section with a bad
        # item is usable: its good items are checked, see `_items`).
        if all(checked[n] is not INVALID for n in ("indicators", "geoip", "settings")):
            first = next((n for n in INDICATOR_SECTIONS if n in self.section_base), None)
            base = self.section_base.get(first, Path(root.file).resolve().parent)
            indicators = compile_indicators(checked, errors, base)
        if checked["clusters"] is not INVALID and checked["budgets"] is not INVALID:
            state = checked["state"]
            budgets = compile_budgets(
                {**checked, "state": None if state is INVALID else state}, errors,
                cluster_ids=self.cluster_ids,
                base=self.section_base.get("budgets", Path(root.file).resolve().parent))
        if errors:
            raise PolicyError(errors)
        geo_base = self.section_base.get("geoip", Path(root.file).resolve().parent)
        return Policy(
            settings=compile_settings(checked["settings"]),
            log=compile_log(checked["log"]),
            rules=rules,
            geoip=_geoip(checked["geoip"], geo_base),
            indicators=indicators,
            budgets=budgets,
            sources=tuple(self.files),
            sections=dict(checked),
        )


def parse_policy(text: str, filename: str = "<rules>") -> Policy:
    """Validate one rules document (its `include:` entries are read from disk, relative to
    `filename`'s folder). The document itself need not declare `version` (text handed over
    by code cannot be caught half-written); every file, included ones too, must."""
    a = _Assembler()
    a.loaded[Path(filename).resolve()] = None
    a.add_text(text, filename)
    return a.policy()


PathArg = str | os.PathLike[str]


def load_policy(paths: PathArg | Sequence[PathArg]) -> Policy:
    """Read and validate rules from files and/or folders (see `_Assembler` for the order).
    Raises `PolicyError` with every problem (also for unreadable files)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    a = _Assembler()
    for p in paths:
        path = Path(p)
        if not path.exists():
            a.errors.add(Where(str(path), 1, 1),
                         "cannot read rules file: no such file or folder")
            continue
        a.add_path(path)
    if not a.files and not a.errors:
        a.errors.add(Where("<rules>", 1, 1), "no rules files given")
    return a.policy()
