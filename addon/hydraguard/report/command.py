"""The `hydraguard report` subcommand (registered by cli.py)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add `report` to the command line's subcommands."""
    rep = sub.add_parser("report", help="one self-contained HTML page (charts, tables) about "
                         "decision logs")
    rep.add_argument("logs", nargs="+", help="decision log(s); each is read with its rotated "
                     "files LOG.N ... LOG.1 (.gz too), oldest first; '-': stdin")
    rep.add_argument("-o", "--output", default="report.html",
                     help="the HTML file to write (default report.html; '-': stdout)")
    rep.add_argument("--no-rotated", action="store_true",
                     help="read only the files named, not their rotated siblings")
    rep.add_argument("--top", type=int, default=20, help="rows per chart and table "
                     "(default 20)")
    rep.add_argument("--title", help="page title (default 'hydraguard decisions')")
    rep.set_defaults(func=cmd_report)


def cmd_report(a: argparse.Namespace) -> int:
    """Write the page; one summary line on stderr. Exit 2 when a log does not open or
    matplotlib (the `report` extra) is missing."""
    try:
        from . import write_report

        res = write_report(a.logs, a.output, rotated=not a.no_rotated, top=max(1, a.top),
                           title=a.title)
    except ImportError as e:
        print(f"hydraguard report: {e}: install the report extra "
              "(pip install 'hydraguard[report]')", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"hydraguard report: {e}", file=sys.stderr)
        return 2
    ag = res.aggregate
    bad = f", {ag.malformed:,} malformed line(s) skipped" if ag.malformed else ""
    where = "stdout" if res.output == "-" else res.output
    print(f"hydraguard report: {ag.records:,} decision(s) from {len(res.sources)} file(s)"
          f"{bad} -> {where}", file=sys.stderr)
    return 0
