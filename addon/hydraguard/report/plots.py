"""The report's charts as PNG bytes. matplotlib is imported here, on first use only (the proxy
never imports this module: tests/test_layering.py). Figures are drawn with the object API
(`matplotlib.figure.Figure` on the Agg canvas): no pyplot, no global state, no display.

Labels come from the log (rule ids, cluster names, ...): mathtext parsing is switched off so a
`$` in a label is drawn as it is."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

ACTION_COLOURS = {"allow": "#4c9a6a", "deny": "#c0392b", "throttle": "#e08e0b",
                  "deny (shadow)": "#e6a59e", "throttle (shadow)": "#f3cf8f"}
OTHER_COLOURS = ["#5b7db1", "#8e6bb5", "#6b8e23", "#b5651d", "#2f8f9d", "#a0522d", "#708090",
                 "#c71585", "#556b2f"]
RC = {"text.parse_math": False, "font.size": 9, "axes.titlesize": 10,
      "svg.fonttype": "none", "figure.dpi": 100}


def _figure(width: float, height: float) -> Any:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):
        return Figure(figsize=(width, height), layout="constrained")


def _png(fig: Any) -> bytes:
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _colour(name: str, i: int) -> str:
    return ACTION_COLOURS.get(name) or OTHER_COLOURS[i % len(OTHER_COLOURS)]


def actions_over_time(rows: Sequence[tuple[float, dict[str, int]]], series: Sequence[str],
                      width_s: int) -> bytes:
    """Stacked bars: decisions per time bucket, one colour per action."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _figure(10, 3.6)
        ax = fig.add_subplot()
        xs = [datetime.fromtimestamp(t, UTC) for t, _ in rows]
        bottom = [0] * len(rows)
        width_days = width_s / 86400
        for i, name in enumerate(series):
            ys = [c.get(name, 0) for _, c in rows]
            ax.bar(xs, ys, width=width_days, bottom=bottom, align="edge", label=name,
                   color=_colour(name, i), linewidth=0)
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        from matplotlib import dates, ticker

        loc = dates.AutoDateLocator()
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(loc))
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_ylabel(f"decisions per {_span(width_s)}")
        ax.set_xlabel("time (UTC)")
        ax.legend(loc="upper left", fontsize=8, ncols=min(len(series), 6))
        ax.grid(axis="y", alpha=0.3)
        return _png(fig)


def _span(seconds: int) -> str:
    for unit, n in (("week", 604800), ("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n and seconds % n == 0:
            k = seconds // n
            return f"{k} {unit}" if k > 1 else unit
    return f"{seconds} s"


def hbars(groups: Sequence[tuple[str, Sequence[tuple[str, float]]]], *,
          xlabel: str, annotations: Sequence[Sequence[str]] | None = None,
          stacked_names: Sequence[str] | None = None) -> bytes:
    """One or more horizontal bar charts side by side: ``groups`` is (title, [(label,
    value)...]) per chart, largest first. ``annotations`` (per chart, per bar) are drawn at
    the end of the bars."""
    import matplotlib

    with matplotlib.rc_context(RC):
        n = max(len(items) for _, items in groups) if groups else 1
        fig = _figure(5 * len(groups) if len(groups) > 1 else 9, 0.9 + 0.26 * max(n, 2))
        axes = fig.subplots(1, len(groups), squeeze=False)[0]
        for gi, (ax, (title, items)) in enumerate(zip(axes, groups, strict=True)):
            labels = [_label(k) for k, _ in items][::-1]
            values = [v for _, v in items][::-1]
            bars = ax.barh(range(len(values)), values,
                           color=OTHER_COLOURS[gi % len(OTHER_COLOURS)])
            ax.set_yticks(range(len(values)), labels)
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            if all(float(v).is_integer() for v in values):
                from matplotlib import ticker

                ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
            ax.grid(axis="x", alpha=0.3)
            if annotations is not None:
                notes = list(annotations[gi])[::-1]
                ax.bar_label(bars, labels=notes, padding=3, fontsize=8)
                ax.margins(x=0.25)
        return _png(fig)


def paired_bars(items: Sequence[tuple[str, float, float]], names: tuple[str, str],
                xlabel: str) -> bytes:
    """Two bars per label (e.g. enforced refusals and shadow hits per rule)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _figure(9, 0.9 + 0.34 * max(len(items), 2))
        ax = fig.add_subplot()
        ys = list(range(len(items)))[::-1]
        h = 0.4
        ax.barh([y + h / 2 for y in ys], [a for _, a, _ in items], height=h,
                label=names[0], color=ACTION_COLOURS["deny"])
        ax.barh([y - h / 2 for y in ys], [b for _, _, b in items], height=h,
                label=names[1], color=OTHER_COLOURS[1])
        ax.set_yticks(ys, [_label(k) for k, _, _ in items])
        ax.set_xlabel(xlabel)
        from matplotlib import ticker

        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        return _png(fig)


UTIL_BANDS = ((0.0, 0.5, "< 50 %", "#4c9a6a"), (0.5, 0.8, "50-80 %", "#a3c45c"),
              (0.8, 0.95, "80-95 %", "#e08e0b"), (0.95, 1.01, ">= 95 %", "#c0392b"))


def utilisation(items: Sequence[tuple[str, Sequence[int]]]) -> bytes:
    """Per budget: share of its requests by utilisation band after the request (histogram of
    20 bins of 5 % each), as one stacked horizontal bar."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _figure(9, 0.9 + 0.34 * max(len(items), 2))
        ax = fig.add_subplot()
        ys = list(range(len(items)))[::-1]
        left = [0.0] * len(items)
        for lo, hi, name, colour in UTIL_BANDS:
            shares = []
            for _, hist in items:
                total = sum(hist) or 1
                n = sum(c for i, c in enumerate(hist) if lo <= i / len(hist) < hi)
                shares.append(100 * n / total)
            ax.barh(ys, shares, left=left, label=name, color=colour)
            left = [a + b for a, b in zip(left, shares, strict=True)]
        ax.set_yticks(ys, [_label(k) for k, _ in items])
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of the budget's requests, by how full its tightest window was after "
                      "them")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, ncols=4,
                  frameon=False)
        return _png(fig)


def _label(text: str, n: int = 48) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
