"""`hydraguard report`: exact aggregate numbers on a synthetic log, bounded counters, rotated
and compressed logs, stdin, malformed lines, and what the page must never contain."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hydraguard.report import aggregate_logs, write_report
from hydraguard.report.aggregate import Aggregate
from hydraguard.report.render import scrub
from hydraguard.report.sketch import Distinct, TimeBuckets, TopK
from hydraguard.report.sources import LogReader, read_lines, rotated_set

from .report_util import SECRET_KEY, T0, rec, records, write_log


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "decisions.jsonl")


def counts(t: TopK) -> dict[str, float]:
    return {k: e.weight for k, e in t.top()}


def test_exact_numbers(log: Path) -> None:
    a, names = aggregate_logs([str(log)])
    assert names == [str(log)]
    assert (a.lines, a.records, a.malformed, a.no_time) == (22, 17, 5, 0)
    assert a.malformed_at == [(str(log), n) for n in (3, 4, 5, 6, 7)]
    assert counts(a.actions) == {"allow": 11, "deny": 4, "throttle": 2}
    assert a.refused == 5 and a.shadow_would_refuse == 2
    assert counts(a.refused_rules) == {"denied-countries": 3, "cluster-tokens": 2}
    assert counts(a.shadow_rules) == {"new-rule": 2, "watch": 1}
    assert counts(a.countries) == {"CN": 3, "NL": 2}
    assert counts(a.subdivisions) == {"CN-BJ": 2, "CN-SH": 1}
    assert counts(a.statuses) == {"200": 12, "403": 3, "429": 2}
    assert counts(a.signals) == {"template.id": 10, "template.accounts": 7,
                                 "ip.residential_proxy": 3}
    assert a.tokens == 1800
    assert (a.accounts.count(), a.client_ips.count(), a.cluster_names.count()) == (6, 3, 3)
    assert a.first == T0 and a.last == T0 + 599.5
    clusters = {k: (c.weight, c.requests, c.refused, c.members.count(), c.ips.count(),
                    c.first, c.last) for k, c in a.clusters.top()}
    assert clusters == {"c:big": (1500, 12, 2, 4, 3, T0, T0 + 540),
                        "c:solo": (300, 2, 0, 1, 1, T0 + 300, T0 + 599.5),
                        "c:cn": (0, 3, 3, 1, 1, T0 + 200, T0 + 202)}
    b = a.budgets.items["cluster-tokens"]
    assert (b.weight, b.refused, b.measured, b.limit, b.windows) == (12, 2, 12, 1000, ["minute"])
    assert b.util_sum == pytest.approx(7.49) and b.util_max == 1.0
    # utilisation 0.1 ... 1.0 and twice 0.995, in 5 % bins
    assert b.hist == [0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 3]
    assert (b.percentile(0.5), b.percentile(0.95)) == (0.65, 1.0)
    assert a.budgets.items["watch"].shadow_refused == 1
    assert a.budgets.items["watch"].weight == 0


def test_time_buckets_by_action(log: Path) -> None:
    a, _ = aggregate_logs([str(log)])
    tb = a.over_time
    assert tb.width == 10 and tb.series == ["allow", "throttle", "deny", "deny (shadow)"]
    rows = tb.rows()
    assert len(rows) == 60 and rows[0][0] == T0 and rows[-1][0] == T0 + 590
    nonempty = {int(t - T0): c for t, c in rows if c}
    assert nonempty == {**{60 * i: {"allow": 1} for i in range(10) if i != 5},
                        300: {"allow": 1, "deny (shadow)": 1}, 100: {"throttle": 2},
                        200: {"deny": 3}, 590: {"allow": 1}}


def test_time_buckets_widen_and_merge() -> None:
    tb = TimeBuckets(max_buckets=5, max_series=2)
    for i in range(6):
        tb.add(1000 + i, "a")
    assert tb.width == 2 and [c for _, c in tb.rows()] == [{"a": 2}, {"a": 2}, {"a": 2}]
    tb.add(1000, "b")
    tb.add(1001, "c")  # a third series is counted as "other"
    assert tb.series == ["a", "b", "other"]
    assert tb.rows()[0] == (1000, {"a": 2, "b": 1, "other": 1})
    tb.add(1000 + 3600, "a")  # an hour later: 15-minute buckets keep the span within 5
    assert tb.width == 900 and [int(t) for t, _ in tb.rows()] == [900, 1800, 2700, 3600, 4500]
    assert sum(sum(c.values()) for _, c in tb.rows()) == 9


def test_topk_exact_below_capacity_and_bounded_above() -> None:
    t: TopK = TopK(cap=3)
    for k, w in [("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1), ("f", 1)]:
        t.add(k, w)
    assert t.exact and counts(t) == {"a": 5, "b": 4, "c": 3, "d": 2, "e": 1, "f": 1}
    t.add("g", 7)  # table full (6 = 2 * cap): keeps a, b, c; the heaviest dropped weighed 2
    assert t.evicted == 3 and t.floor == 2 and not t.exact
    assert {k: (e.weight, e.err) for k, e in t.items.items()} == {
        "a": (5, 0), "b": (4, 0), "c": (3, 0), "g": (9, 2)}
    # The Space-Saving bound: weight - err <= truth <= weight, for every tracked key
    truth = {"a": 5, "b": 4, "c": 3, "g": 7}
    assert all(e.weight - e.err <= truth[k] <= e.weight for k, e in t.items.items())


def test_topk_stays_bounded_on_a_long_tail() -> None:
    t: TopK = TopK(cap=50)
    heavy = {f"heavy{i}": 20 * (50 + i) for i in range(10)}  # added in 20 steps
    for n in range(20_000):
        t.add(f"tail{n}", 1)
        if n % 1000 == 0:
            for k, w in heavy.items():
                t.add(k, w // 20)
    assert len(t) <= 100
    top = dict((k, e) for k, e in t.top(10))
    assert set(top) == set(heavy)
    assert all(e.weight - e.err <= heavy[k] <= e.weight for k, e in top.items())


def test_distinct_is_exact_below_k_and_close_above() -> None:
    d = Distinct(k=256)
    for i in range(200):
        d.add(f"acct_{i}")
        d.add(f"acct_{i}")
    assert d.exact and d.count() == 200
    big = Distinct(k=256)
    for i in range(20_000):
        big.add(f"acct_{i}")
    assert not big.exact and len(big) == 256
    assert 0.75 * 20_000 < big.count() < 1.25 * 20_000  # ~6 % standard error; a 4-sigma band


def test_bounded_memory_on_many_distinct_clusters() -> None:
    a = Aggregate(top=100)
    for i in range(5_000):
        a.add_record(rec(i, cluster=f"c:{i}", account=f"acct_{i}", client_ip=f"10.0.{i}.1",
                         signals={f"sig{i}": True}, rule=f"r{i}"))
    assert a.records == 5_000
    assert len(a.clusters) <= 200 and len(a.signals) <= 512 and len(a.refused_rules) == 0
    assert max(len(c.members) for c in a.clusters.items.values()) <= 256
    assert len(a.accounts) <= 1024 and len(a.over_time.rows()) <= 240


def test_odd_field_types_never_crash() -> None:
    a = Aggregate()
    odd = [{"action": "allow", "ts": 5, "geo": [], "signals": [1], "budget": {"x": 1}},
           {"action": "deny", "enforced": "yes", "geo": {"subdivisions": "CN-BJ"},
            "input_tokens": "many", "budget": [1, {"id": 3, "limit": "x"}], "cluster": 7},
           {"action": "throttle", "ts": "yesterday", "shadow_rules": "r", "status": True,
            "budget_shadow": [None, {"id": None}], "output_tokens": float("inf")}]
    for r in odd:
        a.add_line(json.dumps(r).encode())
    assert (a.records, a.malformed, a.no_time) == (3, 0, 3)
    assert a.refused == 2 and counts(a.countries) == {"(unknown)": 2}
    assert a.tokens == 0 and counts(a.statuses) == {"none": 3}


def test_overlong_lines_are_skipped_not_held(tmp_path: Path) -> None:
    p = tmp_path / "log"
    good = json.dumps(rec(0)).encode()
    p.write_bytes(good + b"\n" + b"x" * 5000 + b"\n" + good + b"\n" + b"y" * 5000)
    with open(p, "rb") as fh:
        lines = list(read_lines(fh, "log", max_line=1000))
    assert [(ln.number, ln.data is None) for ln in lines] == [
        (1, False), (2, True), (3, False), (4, True)]


def test_rotated_set_read_oldest_first_with_gzip(tmp_path: Path) -> None:
    base = tmp_path / "decisions.jsonl"
    rs = records()
    base.write_text(json.dumps(rs[2]) + "\n")
    (tmp_path / "decisions.jsonl.1").write_text(json.dumps(rs[1]) + "\n")
    with gzip.open(tmp_path / "decisions.jsonl.2.gz", "wt") as fh:
        fh.write(json.dumps(rs[0]) + "\n")
    (tmp_path / "decisions.jsonl.4").write_text("not read: .3 is missing\n")
    assert rotated_set(str(base)) == [f"{base}.2.gz", f"{base}.1", str(base)]
    with LogReader([str(base)]) as r:
        got = [json.loads(ln.data)["ts"] for ln in r]
    assert got == [x["ts"] for x in rs[:3]]
    with LogReader([str(base)], rotated=False) as r:
        assert r.names == [str(base)]
    # a rotation while the report reads: the files were opened first, nothing is lost
    reader = LogReader([str(base)])
    os.replace(base, tmp_path / "decisions.jsonl.1")
    base.write_text(json.dumps(rs[3]) + "\n")
    with reader:
        assert len(list(reader)) == 3


def test_damaged_gzip_counts_a_malformed_line(tmp_path: Path) -> None:
    p = tmp_path / "log.gz"
    data = gzip.compress((json.dumps(rec(0)) + "\n").encode() * 200)
    p.write_bytes(data[: len(data) // 2])
    a, _ = aggregate_logs([str(p)], rotated=False)
    assert a.malformed == 1 and a.records >= 1


def test_scrub_blanks_key_shaped_text() -> None:
    assert scrub(f"rule {SECRET_KEY} x") == "rule [redacted] x"
    assert scrub("Authorization: Bearer abc.def-123") == "Authorization: [redacted]"
    assert scrub("sk-proj-abcdefgh1234") == "[redacted]"
    assert scrub("acct_175ecefe8993206f9ae0 account:cluster=h-2ca60014b404b75e") == \
        "acct_175ecefe8993206f9ae0 account:cluster=h-2ca60014b404b75e"


def test_page_holds_no_secret_and_escapes_html(tmp_path: Path) -> None:
    p = tmp_path / "log"
    rows = [rec(0, rule=SECRET_KEY, action="deny", enforced=True, cluster="<script>x</script>",
                geo={"country": "Bearer tok123", "subdivisions": ["$\\frac{1}{2}$"]}),
            rec(1, signals={"<b>sig": True}, budget=[{"id": SECRET_KEY, "limit": 10,
                                                      "remaining": 5}])]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + SECRET_KEY + "\n")
    out = tmp_path / "r.html"
    res = write_report([str(p)], str(out))
    page = out.read_text()
    assert res.aggregate.records == 2 and res.aggregate.malformed == 1
    assert SECRET_KEY not in page and "tok123" not in page and "SECRET" not in page
    assert "<script" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;b&gt;sig" in page and "chart not drawn" not in page  # `$` drawn as text
    assert "[redacted]" in page


def test_report_command_reads_stdin_and_files(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.html"
    cmd = [sys.executable, "-m", "hydraguard", "report", "-", "-o", str(out)]
    r = subprocess.run(cmd, input=log.read_bytes(), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().strip() == (
        f"hydraguard report: 17 decision(s) from 1 file(s), 5 malformed line(s) skipped -> "
        f"{out}")
    page = out.read_text()
    assert '<td data-key="records">17</td>' in page
    assert '<td data-key="malformed">5</td>' in page
    assert "&lt;stdin&gt;:3" in page
    r = subprocess.run([sys.executable, "-m", "hydraguard", "report", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and "No such file" in r.stderr
    assert not (tmp_path / "report.html").exists()
