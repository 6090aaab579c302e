"""`hydraguard check`: validate rules and summarize them in one line per path."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..geo import GeoDatabaseError, open_checked
from ..geo.verify import build_date, notices
from ..policy import Policy, PolicyError, load_policy
from ..policy.schema import Checked
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


def _databases(policy: Policy) -> tuple[list[str], list[str], list[str]]:
    """(descriptions, errors, warnings) of the GeoIP databases the rules reference. Each file
    is opened and its structure checked (geo/verify.py) as at start-up."""
    g = policy.geoip
    written = policy.sections.get("geoip") or {}
    out, errors, warnings = [], [], []
    for role, path in (g.paths if g else ()):
        shown = written.get(role) or path
        try:
            opened = open_checked(path, (role,), verify_seconds=g.verify_seconds)
        except GeoDatabaseError as e:
            out.append(f"{role} {shown} (does not open)")
            msg = f"geoip.{role}: {e}"
            if g.optional:
                out[-1] = f"{role} {shown} (does not open; optional)"
            else:
                errors.append(msg)
            continue
        opened.reader.close()
        demo = ", demo data" if opened.demo else ""
        checked = opened.verification.summary() if opened.verification else "opens"
        out.append(f"{role} {shown} ({opened.layout}{demo}, built "
                   f"{build_date(opened.build_epoch)}, {checked})")
        where = written.at(role) if isinstance(written, Checked) else policy.sources[0]
        warnings += [f"{where}: warning: {text}" for text in notices(
            f"geoip.{role} {shown}", opened.demo, opened.build_epoch, g.max_age_days)]
    return out, errors, warnings


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
    dbs, db_errors, db_warnings = _databases(policy)
    head = f"{path}: ok"
    if len(policy.sources) > 1 or os.path.isdir(path):
        head += f" ({_n(len(policy.sources), 'file')})"
    line = f"{head} — {', '.join(counts)}"
    line += "; geoip " + ", ".join(dbs) if dbs else "; no geoip"
    if db_errors:
        lines = [*db_errors, f"{path}: {_n(len(db_errors), 'error')}"]
        return CheckResult(path, False, lines, len(db_errors))
    warnings = lint_warnings(policy) + db_warnings
    if warnings:
        line += f"; {_n(len(warnings), 'warning')}"
    return CheckResult(path, True, [*warnings, line], warnings=len(warnings))


def check_paths(paths: list[str]) -> list[CheckResult]:
    return [check_path(str(Path(p))) for p in paths]
