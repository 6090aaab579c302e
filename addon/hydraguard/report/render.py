"""The report page: one self-contained HTML file (inline CSS, charts as base64 PNG, no script,
no external resource; a Content-Security-Policy says so to the browser).

Every string that comes from the log is HTML-escaped and passed through `scrub`, which blanks
anything shaped like an API key or a bearer token: the log holds none, and the report keeps it
that way even for a log that was written by something else."""

from __future__ import annotations

import base64
import html
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from . import plots
from .aggregate import Aggregate
from .sketch import Entry, TimeBuckets

SECRET = re.compile(r"(?i)\b(?:sk|rk|pk)-[a-z0-9_\-]{6,}|\bbearer\s+[^\s,;\"']+|"
                    r"\bAIza[0-9a-z_\-]{20,}")
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f6f6f6}
td.k{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all;text-align:left}
.warn{background:#fff4e0;border-left:4px solid #e08e0b;padding:6px 10px}
.muted{color:#777}img{max-width:100%}figure{margin:8px 0}
"""


def scrub(text: str) -> str:
    """``text`` with key- and token-shaped parts replaced by ``[redacted]``."""
    return SECRET.sub("[redacted]", text)


def esc(text: object) -> str:
    """Scrubbed and HTML-escaped."""
    return html.escape(scrub(str(text)), quote=True)


def num(n: float, exact: bool = True) -> str:
    """An integer count with thousands separators (``≈`` when estimated)."""
    return f"{'' if exact else '≈'}{round(n):,}"


def low(e: Entry) -> str:
    """A top-K count: exact, or ``≥`` its guaranteed part when the key was once evicted."""
    return num(e.weight) if not e.err else f"≥ {num(e.low)}"


def when(ts: float | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SSZ`` (UTC)."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "—"


def _img(name: str, png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="fig-{name}"><img alt="{esc(alt)}" data-plot="{name}" '
            f'src="data:image/png;base64,{data}"></figure>')


def _table(tid: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table; cells are already-escaped HTML (first column: a key)."""
    out = [f'<table id="tbl-{tid}"><thead><tr>']
    out += [f"<th>{h}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append(f'<tr><td class="k">{r[0]}</td>' + "".join(f"<td>{c}</td>" for c in r[1:])
                   + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _empty(what: str) -> str:
    return f'<p class="muted empty">{what}</p>'


def _plot(name: str, draw: Callable[[], bytes], alt: str) -> str:
    """A chart, or a note when matplotlib failed on it (the page is written either way)."""
    try:
        return _img(name, draw(), alt)
    except Exception as e:  # a chart that cannot be drawn must not lose the report
        return f'<p class="warn" id="fig-{name}">chart not drawn: {esc(type(e).__name__)}</p>'


def section_summary(a: Aggregate, sources: Sequence[str]) -> str:
    rows = [
        ("decisions", num(a.records)), ("refused (enforced)", num(a.refused)),
        ("would be refused by shadow rules or budgets", num(a.shadow_would_refuse)),
        ("tokens served (input + output)", num(a.tokens)),
        ("distinct accounts", num(a.accounts.count(), a.accounts.exact)),
        ("distinct client addresses", num(a.client_ips.count(), a.client_ips.exact)),
        ("distinct clusters", num(a.cluster_names.count(), a.cluster_names.exact)),
        ("budget state degraded (Redis down)", num(a.degraded)),
        ("upstream or flow errors", num(a.error_lines)),
        ("malformed lines skipped", num(a.malformed)),
        ("records without a readable time", num(a.no_time)),
        ("first decision", when(a.first)), ("last decision", when(a.last)),
    ]
    keys = ["records", "refused", "shadow", "tokens", "accounts", "client-ips", "clusters",
            "degraded", "errors", "malformed", "no-time", "first", "last"]
    body = "".join(f'<tr><th>{esc(k)}</th><td data-key="{key}">{v}</td></tr>'
                   for (k, v), key in zip(rows, keys, strict=True))
    out = [f'<table id="tbl-summary">{body}</table>']
    if a.malformed:
        where = ", ".join(f"{esc(s)}:{n}" for s, n in a.malformed_at)
        more = " …" if a.malformed > len(a.malformed_at) else ""
        out.append(f'<p class="warn" id="malformed">{num(a.malformed)} malformed '
                   f'line{"s" if a.malformed != 1 else ""} (not a JSON object with an action, '
                   f"not UTF-8 or longer than 1 MiB) skipped and left out of every count: "
                   f"{where}{more}</p>")
    srcs = "".join(f"<tr><td class=k>{esc(s)}</td><td>{num(a.per_source.get(_lbl(s), 0))}"
                   "</td></tr>" for s in sources)
    out.append(f'<table id="tbl-sources"><thead><tr><th>file (oldest first)</th><th>lines'
               f"</th></tr></thead><tbody>{srcs}</tbody></table>")
    return "".join(out)


def _lbl(source: str) -> str:
    return "<stdin>" if source == "-" else source


def section_time(tb: TimeBuckets) -> str:
    rows = tb.rows()
    if not rows:
        return _empty("no decision with a readable time")
    return _plot("actions-over-time", lambda: plots.actions_over_time(
        rows, tb.series, tb.width), "decisions over time by action")


def section_refusals(a: Aggregate, n: int) -> str:
    keys = list(dict.fromkeys([k for k, _ in a.refused_rules.top(n)]
                              + [k for k, _ in a.shadow_rules.top(n)]))[:n]
    if not keys:
        return _empty("no refusals and no shadow hits")
    get_r = {k: e.low for k, e in a.refused_rules.top()}
    get_s = {k: e.low for k, e in a.shadow_rules.top()}
    items = sorted(((scrub(k), get_r.get(k, 0), get_s.get(k, 0)) for k in keys),
                   key=lambda t: (-t[1], -t[2], t[0]))
    img = _plot("refusals-by-rule", lambda: plots.paired_bars(
        items, ("refused (enforced)", "shadow: would refuse"), "requests"), "refusals by rule")
    rows = [[esc(k), num(r), pct(r, a.refused), num(s)] for k, r, s in items]
    return img + _table("refusals", ["rule or budget", "refused", "share of refusals",
                                     "shadow hits"], rows)


def section_geo(a: Aggregate, n: int) -> str:
    countries = [(scrub(k), e.low) for k, e in a.countries.top(n)]
    subs = [(scrub(k), e.low) for k, e in a.subdivisions.top(n)]
    if not countries:
        return _empty("no refusals")
    groups = [("refused requests by country", countries)]
    if subs:
        groups.append(("refused requests by subdivision", subs))
    img = _plot("refused-geo", lambda: plots.hbars(groups, xlabel="refused requests"),
                "refused countries and subdivisions")
    t1 = _table("refused-countries", ["country", "refused"],
                [[esc(k), low(e)] for k, e in a.countries.top(n)])
    t2 = _table("refused-subdivisions", ["subdivision", "refused"],
                [[esc(k), low(e)] for k, e in a.subdivisions.top(n)]) if subs else ""
    return img + t1 + t2


def section_clusters(a: Aggregate, n: int) -> str:
    top = [(k, c) for k, c in a.clusters.top(n)]
    if not top:
        return _empty("no decision names a cluster")
    items = [(scrub(k), c.low) for k, c in top]
    notes = [[f"{'≥ ' if c.err else ''}{num(c.members.count(), c.members.exact)} member"
              f"{'s' if c.members.count() != 1 else ''}" for _, c in top]]
    return _plot("top-clusters", lambda: plots.hbars(
        [("top clusters by tokens", items)], xlabel="tokens (input + output)",
        annotations=notes), "top clusters by tokens with member counts")


def section_largest(a: Aggregate, n: int) -> str:
    top = a.clusters.top(n)
    if not top:
        return _empty("no decision names a cluster")
    rows = []
    for k, c in top:
        tokens = low(c) + (f" (≤ {num(c.weight)})" if c.err else "")
        since = "≥ " if c.err else ""  # counted since it came back into the table
        rows.append([esc(k), tokens, since + num(c.requests), since + num(c.refused),
                     since + num(c.members.count(), c.members.exact),
                     since + num(c.ips.count(), c.ips.exact), when(c.first), when(c.last)])
    return _table("largest-clusters", ["cluster", "tokens", "requests", "refused",
                                       "members (accounts)", "client addresses", "first seen",
                                       "last seen"], rows)


def section_budgets(a: Aggregate) -> str:
    top = a.budgets.top()
    if not top:
        return _empty("no budget entries in the log")
    measured = [(scrub(k), b.hist) for k, b in top if b.measured]
    img = _plot("budget-utilisation", lambda: plots.utilisation(measured),
                "budget utilisation") if measured else ""
    rows = []
    for k, b in top:
        p = [b.percentile(q) for q in (0.5, 0.95)]
        rows.append([esc(k), esc(", ".join(b.windows)) or "—",
                     num(b.limit) if b.limit is not None else "—", num(b.weight),
                     num(b.refused), num(b.shadow_refused), num(b.capped),
                     f"{100 * b.util_sum / b.measured:.1f} %" if b.measured else "—",
                     *(f"≤ {100 * x:.0f} %" if x is not None else "—" for x in p),
                     f"{100 * b.util_max:.1f} %" if b.measured else "—"])
    return img + _table("budgets", ["budget", "windows", "limit", "requests", "refused",
                                    "shadow refusals", "output capped", "mean utilisation",
                                    "p50", "p95", "max"], rows)


def section_signals(a: Aggregate, n: int) -> str:
    top = a.signals.top(n)
    if not top:
        return _empty("no signals in the log")
    items = [(scrub(k), 100 * e.low / a.records) for k, e in top]
    img = _plot("signals", lambda: plots.hbars([("signals set, % of decisions", items)],
                                               xlabel="% of decisions"), "signal frequencies")
    rows = [[esc(k), low(e), pct(e.low, a.records)] for k, e in top]
    return img + _table("signals", ["signal", "decisions", "share"], rows)


def section_notes(a: Aggregate) -> str:
    notes = []
    for name, t in (("clusters", a.clusters), ("refusing rules", a.refused_rules),
                    ("countries", a.countries), ("subdivisions", a.subdivisions),
                    ("signals", a.signals), ("budgets", a.budgets)):
        if not t.exact:
            notes.append(f"{name}: more distinct values than the report tracks (it keeps "
                         f"the heaviest); a count marked ≥ is what is certain, the truth may "
                         f"be up to {num(t.floor)} more, and the ranking is by that certain "
                         f"part")
    if not a.accounts.exact or not a.client_ips.exact or not a.cluster_names.exact:
        notes.append("distinct counts marked ≈ are estimates (K-minimum-values, about 6 % "
                     "error)")
    if not notes:
        return '<p class="muted" id="exact">every count on this page is exact</p>'
    return '<ul id="approximate">' + "".join(f"<li>{esc(x)}</li>" for x in notes) + "</ul>"


def render(a: Aggregate, *, sources: Sequence[str], title: str = "hydraguard decisions",
           top: int = 20, generated: float | None = None) -> str:
    """The whole page."""
    gen = when(generated if generated is not None else time.time())
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">hydraguard report generated {gen} from {len(sources)} file(s); '
        f"times in UTC. The decision log holds no API key and no prompt text.</p>",
        '<h2 id="summary">Summary</h2>', section_summary(a, sources),
        '<h2 id="over-time">Decisions over time by action</h2>', section_time(a.over_time),
        '<h2 id="refusals">Refusals by rule</h2>', section_refusals(a, top),
        '<h2 id="geo">Refused countries and subdivisions</h2>', section_geo(a, top),
        '<h2 id="clusters">Top clusters by tokens</h2>', section_clusters(a, top),
        '<h2 id="budgets">Budget utilisation</h2>', section_budgets(a),
        '<h2 id="signals">Signal frequencies</h2>', section_signals(a, top),
        '<h2 id="largest">Largest clusters</h2>', section_largest(a, top),
        '<h2 id="notes">Accuracy</h2>', section_notes(a),
        "</body></html>",
    ]
    return "\n".join(parts)
