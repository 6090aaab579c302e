"""How well hydraguard stops a hydra cluster, per population, on seeded simulated worlds.

    .venv/bin/python bench/efficacy.py [--seeds 1 2 3] [--variants all|base,slower,...]
        [--scale small|full] [--rules FILE ...] [--budgets shipped|x2|both] [--detail]

Variant "batches": half of the hydra's accounts send one Message Batch of 25 prompts (max_tokens
8192 each) instead of single calls, as a hydra throttled on /v1/messages would; the other half
call as in "base". A batch let through counts every token its requests are served.

For every seed and hydra variant: a world (bench/efficacy_world.py: networks, GeoIP databases,
the hydra and the legitimate look-alikes) is replayed through the stand-in upstream and a real
`hydraguard run` with the rules under test rewritten for the world (bench/efficacy_proxy.py).
The replay is time-compressed: simulated second t is sent at real second t / speed, and every
duration in the rules (budget windows, link and indicator windows) is divided by the same speed,
so the proxy sees the world's own timing.

Scores (from the client responses; the decision log is cross-checked and explains refusals):
- hydra share: tokens served to the hydra / tokens it would get if every API key were limited
  to what a heavy ordinary user needs (50,000 tokens per hour, sliding);
- first refusal #, ">90 % refused from #": the 1-based index (in time order) of the hydra's
  first refused request, and the first index i such that of requests i..j more than 90 %
  were refused, for every later j (the clamp holds from #i on);
- FP per legitimate population: refused requests / requests;
- refused-country rate: refused / requests of callers in countries the rules refuse (should be
  100 %).
`--budgets x2` replaces every budget window's tokens by twice the heaviest legitimate API key's
use in any window of that length (simulated time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import efficacy_proxy as px
import yaml
from efficacy_world import LEGIT, VARIANTS, Request, World, make_world

PER_KEY_TOKENS, PER_KEY_WINDOW = 50_000, 3600.0
GOAL_SHARE, GOAL_FROM90, GOAL_FP = 0.05, 50, 0.001
DEFAULT_RULES = px.ROOT / "rules" / "default.yaml"
RATE = 150.0  # requests/s the replay aims at: what a busy 2-core machine keeps up with


@dataclass
class Row:
    seed: int
    variant: str
    budgets: str
    share: float
    first: int | None
    from90: int | None
    fp: dict[str, float]
    refused_rate: float | None
    requests: int
    hydra_requests: int
    speed: float
    seconds: float
    lag_p99: float       # simulated seconds a request left late (99th percentile)
    errors: int
    notes: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)

    def meets_goals(self) -> bool:
        return (self.share <= GOAL_SHARE and self.from90 is not None
                and self.from90 <= GOAL_FROM90 and all(v <= GOAL_FP for v in self.fp.values()))


# --------------------------------------------------------------------------- scoring


def per_key_allowance(reqs: list[Request], tokens: list[int]) -> int:
    """Tokens the requests would get with a per-key limit of PER_KEY_TOKENS per hour."""
    total = 0
    by_key: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
    used: dict[str, int] = defaultdict(int)
    for r, n in zip(reqs, tokens, strict=True):
        q = by_key[r.key]
        while q and q[0][0] <= r.t - PER_KEY_WINDOW:
            used[r.key] -= q.popleft()[1]
        if used[r.key] + n <= PER_KEY_TOKENS:
            q.append((r.t, n))
            used[r.key] += n
            total += n
    return total


def heaviest_legit(reqs: list[Request], tokens: list[int]) -> Callable[[float], int]:
    """window seconds -> most tokens one legitimate key used in any window of that length."""
    series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for r, n in zip(reqs, tokens, strict=True):
        if r.pop in LEGIT:
            series[r.key].append((r.t, n))

    def peak(window: float) -> int:
        best = 0
        for pts in series.values():
            lo, acc = 0, 0
            for t, n in pts:
                acc += n
                while pts[lo][0] <= t - window:
                    acc -= pts[lo][1]
                    lo += 1
                best = max(best, acc)
        return best

    return peak


def from_90(refused: list[bool]) -> int | None:
    """First 1-based index i from which more than 90 % are refused at every point: for every
    j >= i, more than 90 % of requests i..j were refused (None: never)."""
    # x_k = refused_k - 0.9; P = prefix sums; i qualifies when P[m] > P[i] for every m > i
    prefix = [0.0]
    for r in refused:
        prefix.append(prefix[-1] + (0.1 if r else -0.9))
    suffix_min = float("inf")
    best = None
    for i in range(len(refused) - 1, -1, -1):
        suffix_min = min(suffix_min, prefix[i + 1])
        if suffix_min > prefix[i] + 1e-9:
            best = i + 1
    return best


def score(world: World, tokens: list[int], results: list[px.Result],
          log: list[dict], budgets: str, speed: float, seconds: float) -> Row:
    reqs = world.requests
    refused = [res.status not in (0, 200) for res in results]
    hydra = [i for i, r in enumerate(reqs) if r.pop == "hydra"]
    h_ref = [refused[i] for i in hydra]
    served = sum(results[i].served for i in hydra)
    allowance = per_key_allowance([reqs[i] for i in hydra], [tokens[i] for i in hydra])
    by_pop: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(reqs):
        by_pop[r.pop].append(i)
    fp = {p: sum(refused[i] for i in by_pop[p]) / max(1, len(by_pop[p])) for p in LEGIT}
    rc = by_pop.get("refused-country")
    row = Row(
        world.seed, world.variant, budgets, served / max(1, allowance),
        h_ref.index(True) + 1 if any(h_ref) else None, from_90(h_ref), fp,
        sum(refused[i] for i in rc) / len(rc) if rc else None, len(reqs), len(hydra), speed,
        seconds, speed * sorted(r.lag for r in results)[int(0.99 * (len(results) - 1))],
        sum(r.status == 0 for r in results))
    _check(world, tokens, results, log, row)
    return row


def _check(world: World, tokens: list[int], results: list[px.Result], log: list[dict],
           row: Row) -> None:
    """Cross-check the decision log and explain refusals per population (row.notes/detail)."""
    pop_of = {px.account_of(r.key): r.pop for r in world.requests}
    if len(log) != len(world.requests):
        row.notes.append(f"decision log has {len(log)} lines for {len(world.requests)} requests")
    if row.errors:
        row.notes.append(f"{row.errors} requests got no response")
    unknown = sum(rec.get("account") not in pop_of for rec in log)
    if unknown:
        row.notes.append(f"{unknown} log lines with an unknown account")
    wrong = sum(1 for r, res, n in zip(world.requests, results, tokens, strict=True)
                if res.status == 200 and res.served != n)
    if wrong:
        row.notes.append(f"{wrong} allowed requests served other than the expected tokens")
    log_served: Counter[str] = Counter()
    why: dict[str, Counter[str]] = defaultdict(Counter)
    clusters: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    batches = Counter()
    via: dict[str, Counter[str]] = defaultdict(Counter)
    for rec in log:
        pop = pop_of.get(rec.get("account"), "?")
        if rec.get("route") == "batch":  # served later upstream: no usage in the log line
            batches["refused" if rec.get("enforced") else "allowed"] += 1
            batches["requests"] += (rec.get("batch") or {}).get("requests") or 0
        elif rec.get("status") == 200:
            n = (rec.get("input_tokens") or 0) + (rec.get("output_tokens") or 0)
            log_served[pop] += n
            if pop == "hydra":  # through which probation pool (none: established)
                pools = [b["probation"] for b in rec.get("budget") or () if b.get("probation")]
                via[",".join(pools) or "established"].update(tokens=n, requests=1)
        elif rec.get("enforced") or rec.get("stage") == "budget":
            why[pop][f"{rec.get('stage') or 'rule'}:{rec.get('rule')}"] += 1
        if rec.get("cluster"):
            clusters[rec["cluster"]][pop].add(rec["account"])
    if batches:
        row.notes.append(f"batches: {batches['allowed']} allowed, {batches['refused']} "
                         f"refused ({batches['requests']} requests in them)")
    client_served: Counter[str] = Counter()
    for r, res in zip(world.requests, results, strict=True):
        if r.path != px.BATCH_PATH:
            client_served[r.pop] += res.served
    for pop, n in client_served.items():
        if abs(log_served[pop] - n) > 0.01 * max(n, 1):
            row.notes.append(f"{pop}: log says {log_served[pop]} tokens served, clients {n}")
    if via:
        row.detail.append("  hydra served via: " + "; ".join(
            f"{k} {c['tokens']} tokens in {c['requests']}" for k, c in
            sorted(via.items(), key=lambda kv: -kv[1]["tokens"])))
    for pop in ("hydra", *LEGIT, "refused-country"):
        accts = {px.account_of(r.key) for r in world.requests if r.pop == pop}
        shared = [c for c, pops in clusters.items() if pops.get(pop)]
        with_hydra = {a for c in shared if "hydra" in clusters[c] for a in clusters[c][pop]}
        biggest = max((len(clusters[c][pop]) for c in shared), default=0)
        reasons = ", ".join(f"{k} {v}" for k, v in why[pop].most_common(3)) or "-"
        row.detail.append(
            f"  {pop:<16} accounts {len(accts):>5}  cluster ids {len(shared):>5}  biggest "
            f"{biggest:>5}  in a cluster with hydra {len(with_hydra) if pop != 'hydra' else '-':>5}"
            f"  refused by: {reasons}")


# --------------------------------------------------------------------------- one run


def run_one(seed: int, variant: str, scale: str, rules: list[str], budgets: str = "shipped",
            rate: float = RATE, workers: int = 24, speed: float | None = None,
            keep: Path | None = None, upstream: str | None = None, raw_time: bool = False
            ) -> Row:
    """Build the world, replay it through a fresh proxy, score it. `raw_time`: leave the
    durations in the rules alone (the proxy then sees the world `speed` times faster)."""
    t_start = time.monotonic()
    files = px.rules_files(rules)
    docs = [yaml.safe_load(f.read_text(encoding="utf-8")) or {} for f in files]
    world = make_world(seed, variant, scale, px.refused_countries(docs) or ["KP", "IR"])
    tokens = [px.expected_tokens(r) for r in world.requests]
    max_speed = min(px.durations(docs), default=60.0)  # every duration stays >= 1 s
    if speed is None:
        speed = min(max_speed, world.duration * rate / len(world.requests))
    peak = heaviest_legit(world.requests, tokens) if budgets == "x2" else None
    with tempfile.TemporaryDirectory(prefix="hg-efficacy-") as d:
        tmp = keep / f"s{seed}-{variant}-{budgets}" if keep else Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        geo = px.write_geoip(world, tmp)
        derived = px.derive_rules(files, world, geo, tmp, 1.0 if raw_time else speed, peak)
        log_path = tmp / "decisions.jsonl"
        log_path.unlink(missing_ok=True)
        server = None
        if upstream is None:
            server, port = px.stub_module().start_stub()
            upstream = f"http://127.0.0.1:{port}"
        try:
            with px.proxy_process(upstream, ",".join(map(str, derived.paths)), log_path) as (
                    _proc, url):
                t0 = time.monotonic()
                results = px.replay(url, world.requests, speed, workers)
                seconds = time.monotonic() - t0
                log = px.read_log(log_path, len(world.requests))
        finally:
            if server is not None:
                server.shutdown()
    row = score(world, tokens, results, log, budgets, speed, seconds)
    row.notes.append(f"{time.monotonic() - t_start:.0f} s in all")
    return row


# --------------------------------------------------------------------------- table


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %" if x >= 0.001 or x == 0 else f"{100 * x:.2f} %"


def table(rows: list[Row]) -> str:
    head = ["seed", "variant", "budgets", "hydra share", "1st refusal #", ">90% refused from #",
            *(f"FP {p}" for p in LEGIT), "refused-country", "requests", "speed", "replay s",
            "lag p99 (sim)"]
    goal = ["", "goal", "", f"<= {GOAL_SHARE:.0%}", "", f"<= #{GOAL_FROM90}",
            *([f"<= {100 * GOAL_FP:.1f} %"] * len(LEGIT)), "100 %", "", "", "", ""]
    body = [[str(r.seed), r.variant, r.budgets, _pct(r.share),
             "never" if r.first is None else f"#{r.first}",
             "never" if r.from90 is None else f"#{r.from90}",
             *(_pct(r.fp[p]) for p in LEGIT), _pct(r.refused_rate), str(r.requests),
             f"{r.speed:.0f}x", f"{r.seconds:.0f}", f"{r.lag_p99:.0f} s"] for r in rows]
    widths = [max(len(x[i]) for x in [head, goal, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, line(goal), *(line(b) for b in body)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--variants", default="all", help="all, or a comma list of: "
                    + ", ".join(VARIANTS))
    ap.add_argument("--scale", choices=("small", "full"), default="full")
    ap.add_argument("--rules", nargs="+", default=[str(DEFAULT_RULES)],
                    help="rules files or folders, in load order (default: rules/default.yaml)")
    ap.add_argument("--budgets", choices=("shipped", "x2", "both"), default="shipped",
                    help="x2: every budget window at twice the heaviest legitimate key's use")
    ap.add_argument("--rate", type=float, default=RATE,
                    help="target requests/s of the replay (sets the time compression)")
    ap.add_argument("--speed", type=float, help="fixed time compression instead of --rate")
    ap.add_argument("--workers", type=int, default=24, help="concurrent client connections")
    ap.add_argument("--raw-time", action="store_true",
                    help="do not scale the rules' durations (budgets see compressed time)")
    ap.add_argument("--keep", type=Path, help="keep databases, rules and decision logs here")
    ap.add_argument("--detail", action="store_true",
                    help="per-population clusters, reasons; the hydra's tokens per probation pool")
    a = ap.parse_args(argv)
    variants = list(VARIANTS) if a.variants == "all" else a.variants.split(",")
    if bad := [v for v in variants if v not in VARIANTS]:
        ap.error(f"unknown variant(s) {bad}; known: {', '.join(VARIANTS)}")
    modes = ["shipped", "x2"] if a.budgets == "both" else [a.budgets]
    rows: list[Row] = []
    t0 = time.monotonic()
    server, port = px.stub_module().start_stub()
    try:
        for seed in a.seeds:
            for variant in variants:
                for mode in modes:
                    row = run_one(seed, variant, a.scale, a.rules, mode, a.rate, a.workers,
                                  a.speed, a.keep, f"http://127.0.0.1:{port}", a.raw_time)
                    rows.append(row)
                    print(f"seed {seed} {variant} budgets={mode}: hydra share "
                          f"{_pct(row.share)}, >90 % refused from "
                          f"{row.from90 or 'never'}; " + "; ".join(row.notes),
                          file=sys.stderr, flush=True)
                    if a.detail:
                        print("\n".join(row.detail), file=sys.stderr, flush=True)
    finally:
        server.shutdown()
    print(f"\nefficacy, scale {a.scale}, rules {' '.join(a.rules)}"
          f"{', durations NOT scaled' if a.raw_time else ''} ({time.monotonic() - t0:.0f} s)\n")
    print(table(rows))
    if len(rows) > 1:
        print(f"\nmedian hydra share {_pct(statistics.median(r.share for r in rows))}; "
              f"runs meeting every goal: {sum(r.meets_goals() for r in rows)}/{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
