"""`hydraguard report`: one self-contained HTML page about a decision log.

    sources.py    rotated sets (LOG.N ... LOG.1, LOG), gzip, stdin; bounded lines
    sketch.py     bounded counters (top-K, distinct counts, time buckets)
    aggregate.py  decision log records -> counts, on the fly
    plots.py      matplotlib charts (imported on first use; the proxy never loads it)
    render.py     the HTML page

The proxy does not import this package (tests/test_layering.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .aggregate import Aggregate
from .sources import LogReader

__all__ = ["Aggregate", "ReportResult", "aggregate_logs", "write_report"]


@dataclass
class ReportResult:
    """What `write_report` did."""

    aggregate: Aggregate
    sources: list[str]
    output: str
    size: int


def aggregate_logs(paths: Sequence[str], *, rotated: bool = True, top: int = 500
                   ) -> tuple[Aggregate, list[str]]:
    """Read the logs (each with its rotated files unless ``rotated`` is False) into an
    Aggregate; the files read, oldest first. OSError names a file that does not open."""
    agg = Aggregate(top=top)
    with LogReader(list(paths), rotated=rotated) as reader:
        for line in reader:
            agg.add_line(line.data, line.source, line.number)
        return agg, reader.names


def write_report(paths: Sequence[str], output: str, *, rotated: bool = True, top: int = 20,
                 title: str | None = None) -> ReportResult:
    """Aggregate the logs and write the page to ``output`` ('-': stdout) atomically
    (a temporary file in the same folder, then a rename)."""
    from .render import render

    agg, names = aggregate_logs(paths, rotated=rotated)
    page = render(agg, sources=names, title=title or "hydraguard decisions", top=top)
    data = page.encode("utf-8")
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return ReportResult(agg, names, output, len(data))
    folder = os.path.dirname(os.path.abspath(output))
    tmp = os.path.join(folder, f".{os.path.basename(output)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return ReportResult(agg, names, output, len(data))
