"""Policy tests: YAML cases (request facts -> expected decision) run against rules.

A test file is either a list of cases, or a mapping::

    rules: ../default.yaml          # rules under test (file, folder or list), relative to
                                    # this file; `hydraguard test --rules` overrides it
    cases:
      - name: North Korea is refused
        request: {ip: 192.0.2.81, key: sk-test, model: claude-x}
        expect: {action: deny, rule: sanctioned-regions, status: 403}

Cases of one file run in order against one pipeline, so budget state (in memory) carries
over from case to case; the clock stands still (no refill between cases).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..policy import PolicyError, load_policy
from ..policy.model import ACTIONS
from ..policy.schema import (
    INVALID,
    AnyValue,
    Bool,
    Errors,
    Field,
    Int,
    ListOf,
    MapOf,
    PolicyIssue,
    Str,
    Struct,
)
from ..policy.yamlpos import Where, YamlError, load_located
from .evaluate import Evaluation, Evaluator, RequestSpec

FIXED_CLOCK = 1_750_000_000.0

REQUEST = Struct(doc="The request of a case.", fields={
    "ip": Field(Str(), default="192.0.2.1",
                doc="Address the connection comes from (the TCP peer)."),
    "method": Field(Str(), default="POST", doc="HTTP method."),
    "path": Field(Str(), default="/v1/messages", doc="Request path (picks the API)."),
    "key": Field(Str(non_empty=False), default="sk-test",
                 doc="API key (hashed into the account like the proxy does)."),
    "model": Field(Str(), default="claude-sonnet-4-5", doc="Model in the synthesized body."),
    "stream": Field(Bool(), default=False, doc="Ask for a streamed response."),
    "max_tokens": Field(Int(min=1), doc="Output cap in the synthesized body."),
    "prompt": Field(Str(non_empty=False), default="Hello", doc="User prompt text."),
    "headers": Field(MapOf(Str(non_empty=False)), default=None, doc="Extra headers."),
    "body": Field(AnyValue(), doc="Body as written (mapping: JSON) instead of a synthesized "
                  "one."),
    "signals": Field(MapOf(AnyValue()), default=None,
                     doc="Signals to set (added after the indicators ran)."),
})

EXPECT = Struct(doc="What the decision must be (only the keys given are compared).", fields={
    "action": Field(Str(choices=ACTIONS), doc="allow, deny or throttle."),
    "rule": Field(Str(), doc="Deciding rule id (`default`: no rule matched)."),
    "cluster": Field(Str(non_empty=False), doc="Cluster key of the request."),
    "status": Field(Int(min=100, max=599),
                    doc="Status the proxy answers itself (a forwarded request has none)."),
    "forwarded": Field(Bool(), doc="true: the request goes upstream (not refused)."),
    "shadow": Field(Bool(), doc="The decision is a shadow one."),
    "kind": Field(Str(), doc="Error kind of a refusal (permission, region, rate_limit, ...)."),
    "reason": Field(Str(non_empty=False), doc="Reason text (exact)."),
})

CASE = Struct(doc="One policy test case.", fields={
    "name": Field(Str(), required=True, doc="Name shown in reports."),
    "request": Field(REQUEST, default=None, doc=REQUEST.doc),
    "expect": Field(EXPECT, required=True, doc=EXPECT.doc),
})

TEST_FILE = Struct(doc="A policy test file.", fields={
    "rules": Field(ListOf(Str(), min_len=1, allow_scalar=True),
                   doc="Rules under test, relative to the test file."),
    "cases": Field(ListOf(CASE, min_len=1), required=True, doc="The cases."),
})


@dataclass
class Case:
    name: str
    where: Where
    request: RequestSpec
    expect: dict[str, Any]


@dataclass
class TestFile:
    path: str
    rules: list[str] | None
    cases: list[Case]


@dataclass
class CaseResult:
    case: Case
    ok: bool
    mismatches: list[tuple[str, Any, Any]]  # (key, expected, got)
    evaluation: Evaluation | None = None


@dataclass
class FileResult:
    path: str
    rules: list[str]
    results: list[CaseResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # invalid test file or rules

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.results)


def is_test_file(path: Path) -> bool:
    """A YAML file whose top level is a list, or a mapping with `cases`."""
    try:
        data = load_located(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, YamlError):
        return False
    return isinstance(data, list) or (isinstance(data, dict) and "cases" in data)


def parse_test_file(path: str) -> TestFile:
    """Validate a test file. Raises PolicyError (file:line:col) on problems."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = load_located(text, path)
    except YamlError as e:
        raise PolicyError([PolicyIssue(e.where, e.message)]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError([PolicyIssue(Where(path, 1, 1), f"cannot read test file: {e}")]) \
            from None
    errors = Errors()
    top = Where(path, 1, 1)
    if isinstance(data, list):
        checked = ListOf(CASE, min_len=1).check(data, getattr(data, "where", top), "cases",
                                                errors)
        rules, cases = None, checked
        items = data
    else:
        checked = TEST_FILE.check(data, top, "", errors)
        if checked is INVALID:
            raise PolicyError(errors)
        rules, cases = checked["rules"], checked["cases"]
        items = data["cases"]
    if errors or cases is INVALID:
        raise PolicyError(errors)
    base = Path(path).parent
    out = []
    for c, raw in zip(cases, items, strict=True):
        req = dict(c["request"] or {})
        req = {k: v for k, v in req.items() if v is not None}
        out.append(Case(c["name"], getattr(raw, "where", top), RequestSpec.from_mapping(req),
                        {k: v for k, v in c["expect"].items() if v is not None}))
    rule_paths = None if rules is None else [
        r if os.path.isabs(r) else os.path.normpath(base / r) for r in rules]
    return TestFile(path, rule_paths, out)


def _compare(expect: dict[str, Any], ev: Evaluation) -> list[tuple[str, Any, Any]]:
    d = ev.decision
    got = {"action": d.action, "rule": d.rule, "cluster": ev.facts.cluster,
           "status": ev.status, "forwarded": ev.status is None, "shadow": d.shadow,
           "kind": d.kind, "reason": d.reason}
    return [(k, v, got[k]) for k, v in expect.items() if got[k] != v]


async def run_file(tf: TestFile, rules: list[str] | None = None) -> FileResult:
    """Run every case of a test file against its rules (or `rules`)."""
    paths = rules or tf.rules
    res = FileResult(tf.path, list(paths or []))
    if not paths:
        res.errors.append(f"{tf.path}: no rules to test: add `rules:` to the file or "
                          "pass --rules")
        return res
    try:
        policy = load_policy(paths)
    except PolicyError as e:
        res.errors += [str(i) for i in e.issues]
        return res
    ev = Evaluator(policy, clock=lambda: FIXED_CLOCK, budgets="admit")
    try:
        for case in tf.cases:
            e = await ev.evaluate(case.request)
            bad = _compare(case.expect, e)
            res.results.append(CaseResult(case, not bad, bad, e))
    finally:
        await ev.aclose()
    return res


def discover(paths: list[str]) -> tuple[list[str], list[str]]:
    """(test files, problems). A path may be a test file; a rules file (runs the test files
    that name it in `rules:`, from `tests/` in its folder or in the two folders above); or
    a folder (its test files and those in its `tests/`)."""
    found: list[str] = []
    problems: list[str] = []

    def add(p: Path) -> None:
        if str(p) not in found:
            found.append(str(p))

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            cands = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            cands += sorted([*(p / "tests").glob("*.yaml"), *(p / "tests").glob("*.yml")])
            hits = [c for c in cands if is_test_file(c)]
            if not hits:
                problems.append(f"{raw}: no policy test files found")
            for c in hits:
                add(c)
        elif p.is_file() and is_test_file(p):
            add(p)
        elif p.is_file():
            target = p.resolve()
            hits = []
            dirs = [d / "tests" for d in (p.parent, *list(p.parent.parents)[:2])]
            cands = [c for d in dirs if d.is_dir() for c in sorted(d.glob("*.y*ml"))]
            for c in cands:
                try:
                    tf = parse_test_file(str(c))
                except PolicyError:
                    continue
                if any(Path(r).resolve() == target for r in tf.rules or ()):
                    hits.append(c)
            if not hits:
                problems.append(f"{raw}: no policy tests name this rules file (looked in "
                                f"{', '.join(str(d) for d in dirs)})")
            for c in hits:
                add(c)
        else:
            problems.append(f"{raw}: no such file or folder")
    return found, problems


def _fmt(v: Any) -> str:
    return "forwarded (no status)" if v is None else repr(v) if isinstance(v, str) else str(v)


def render(results: list[FileResult]) -> str:
    """Readable report of a test run."""
    lines: list[str] = []
    for fr in results:
        if fr.errors:
            lines.append(f"{fr.path}: ERROR")
            lines += [f"  {e}" for e in fr.errors]
            continue
        status = "ok" if not fr.failed else f"{fr.failed} failed"
        lines.append(f"{fr.path}: {status}, {fr.passed} passed "
                     f"(rules: {', '.join(fr.rules)})")
        for r in fr.results:
            if r.ok:
                continue
            ev = r.evaluation
            lines.append(f"  FAIL {r.case.where} {r.case.name}")
            for key, want, got in r.mismatches:
                lines.append(f"    {key}: expected {_fmt(want)}, got {_fmt(got)}")
            if ev is not None:
                d = ev.decision
                lines.append(f"    decision: {d.action} by {d.rule}: {d.reason}")
                for t in ev.trace:
                    lines.append(f"      {t.id}: {t.outcome} -- {t.detail}")
    total_p = sum(fr.passed for fr in results)
    total_f = sum(fr.failed for fr in results)
    errs = sum(bool(fr.errors) for fr in results)
    summary = f"{total_p} passed, {total_f} failed"
    if errs:
        summary += f", {errs} file(s) with errors"
    lines.append(summary)
    return "\n".join(lines)


def run_paths(paths: list[str], rules: list[str] | None = None
              ) -> tuple[list[FileResult], list[str]]:
    """Discover and run. Returns (results, problems)."""
    files, problems = discover(paths)
    results: list[FileResult] = []
    for f in files:
        try:
            tf = parse_test_file(f)
        except PolicyError as e:
            results.append(FileResult(f, [], errors=[str(i) for i in e.issues]))
            continue
        results.append(asyncio.run(run_file(tf, rules)))
    return results, problems
