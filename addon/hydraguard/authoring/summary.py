"""`hydraguard check`: validate rules and summarize them in one line per path."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..geo import GeoDatabaseError, open_checked
from ..policy import Policy, PolicyError, load_policy
from .lint import lint_warnings


@dataclass
class CheckResult:
    path: str
    ok: bool
    lines: list[str] = field(default_factory=list)  # what to print, in order
    errors: int = 0
    warnings: int = 0  # `hydraguard check --strict` fails on these too


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _databases(policy: Policy) -> tuple[list[str], list[str]]:
    """(descriptions, errors) of the GeoIP databases the rules reference."""
    g = policy.geoip
    written = policy.sections.get("geoip") or {}
    out, errors = [], []
    for role, path in (g.paths if g else ()):
        shown = written.get(role) or path
        try:
            opened = open_checked(path, (role,))
        except GeoDatabaseError as e:
            out.append(f"{role} {shown} (does not open)")
            msg = f"geoip.{role}: {e}"
            if g.optional:
                out[-1] = f"{role} {shown} (does not open; optional)"
            else:
                errors.append(msg)
            continue
        opened.reader.close()
        out.append(f"{role} {shown} ({opened.layout}, opens)")
    return out, errors


def check_path(path: str) -> CheckResult:
    """Validate one file or folder (with its includes); open its GeoIP databases."""
    try:
        policy = load_policy(path)
    except PolicyError as e:
        lines = [str(i) for i in e.issues]
        lines.append(f"{path}: {_n(len(e.issues), 'error')}")
        return CheckResult(path, False, lines, len(e.issues))
    s = policy.sections
    counts = [_n(len(policy.rules), "rule"), _n(len(s.get("clusters") or ()), "cluster"),
              _n(len(s.get("budgets") or ()), "budget")]
    if s.get("indicators"):
        counts.append("indicators on")
    dbs, db_errors = _databases(policy)
    head = f"{path}: ok"
    if len(policy.sources) > 1 or os.path.isdir(path):
        head += f" ({_n(len(policy.sources), 'file')})"
    line = f"{head} — {', '.join(counts)}"
    line += "; geoip " + ", ".join(dbs) if dbs else "; no geoip"
    if db_errors:
        lines = [*db_errors, f"{path}: {_n(len(db_errors), 'error')}"]
        return CheckResult(path, False, lines, len(db_errors))
    warnings = lint_warnings(policy)
    if warnings:
        line += f"; {_n(len(warnings), 'warning')}"
    return CheckResult(path, True, [*warnings, line], warnings=len(warnings))


def check_paths(paths: list[str]) -> list[CheckResult]:
    return [check_path(str(Path(p))) for p in paths]
