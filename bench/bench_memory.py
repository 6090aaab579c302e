"""Memory at scale: what the proxy's state costs per account, with everything on.

N accounts, each from a new client IP, go through the parts the proxy runs for a model call,
built by a real `Gateway` from the shipped rules (rules/default.yaml, bounds as shipped unless
``--bound``): the indicators (`SignalCollector.observe`: behaviour windows, JA4, templates),
the cluster resolution with hydra linking (`MemoryLinks`: evidence ip / prefix / asn /
template, 5 % through flagged networks), the budgets (`BudgetDriver.admit` + `settle` on the
memory backend: three cluster windows per account, probation by network / ASN) and the
probation history. Evidence is shaped like real traffic: IPv4 exits in 200,000 /24s (a few
accounts per /24 at a million), a quarter IPv6 /64s, ASNs skewed (the largest holds ~3 % of
accounts), a template id on 60 % of requests from 5,000 skewed templates, 1 request in 100
with a real prompt (MinHash template matcher), 50 JA4 stacks.

Each size runs in its own process: tracemalloc (one frame) attributes what stays allocated to
the module that allocated it (signals/, clusters/, budgets/memory.py, budgets/history.py), plus
the signal tables' typed arrays held in their own anonymous mappings (from 1 MiB up, which
tracemalloc does not see: counted from their sizes); RSS growth and µs per account come from a
second run of the same size without tracemalloc. The table gives MiB and bytes per account;
the linker's why-records (linked accounts only) are counted separately.

Run: .venv/bin/python bench/bench_memory.py [--sizes 100000,1000000] [--bound N]
  --bound N: set every per-key bound (link.max_accounts_tracked, state.max_keys, behaviour
  max_keys) to N, to see the cost of tracking everything instead of the shipped bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import yaml
from benchutil import rss_mib

from hydraguard import apis
from hydraguard.apis.usage import Usage
from hydraguard.facts import Facts
from hydraguard.gather import set_cluster
from hydraguard.geo.info import GeoInfo
from hydraguard.pipeline import Gateway, RequestView
from hydraguard.policy import load_policy
from hydraguard.signals.table import KeyTable

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules" / "default.yaml"
GROUPS = (  # component -> path fragments of the modules that allocate its state
    ("signals", ("/hydraguard/signals/",)),
    ("linker", ("/hydraguard/clusters/",)),
    # with the keys it builds (step.py) and what tracemalloc's one frame puts on the driver
    ("budget state", ("/hydraguard/budgets/memory.py", "/cachetools/", "/budgets/step.py",
                      "/budgets/driver.py")),
    ("probation history", ("/hydraguard/budgets/history.py",)),
)
WORDS = ["the", "model", "should", "answer", "every", "question", "carefully", "and", "cite",
         "relevant", "source", "documents", "while", "keeping", "a", "formal", "tone",
         "customer", "order", "invoice", "refund"]


def _policy(bound: int | None) -> Path:
    """The shipped rules without GeoIP (facts carry their own GeoInfo), bounds as asked."""
    doc = yaml.safe_load(RULES.read_text())
    doc.pop("geoip", None)
    if bound:
        doc["indicators"]["behaviour"]["max_keys"] = bound
        doc["state"]["max_keys"] = bound
        for c in doc["clusters"]:
            if "link" in c:
                c["link"]["max_accounts_tracked"] = bound
    path = Path(tempfile.mkdtemp()) / "rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _request(i: int, rnd: random.Random) -> tuple[Facts, RequestView]:
    """Request i: a new account from a new client IP, evidence shaped like real traffic."""
    if i % 4 == 3:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(
            (0x2A00_1450 << 96) + ((i * 7919) % (1 << 40) << 64) + 1)
    else:
        net = (0x0B00_0000 >> 8) + (i * 40503) % 200_000  # 200,000 /24s
        ip = ipaddress.IPv4Address((net << 8) + (i // 200_000) % 256)
    flagged = rnd.random() < 0.05
    tpl = None
    if i % 100 < 2:  # 2 % of accounts are hydra fleets of ~20: a flagged /24 and one template
        fleet = i // 1000
        ip = ipaddress.IPv4Address(((0x6400_0000 >> 8) + fleet) << 8 | (i // 100) % 10 * 2
                                   + i % 100)
        flagged, tpl = True, f"fleet-{fleet}"
    asn = 1 + int(30_000 * rnd.random() ** 3)
    geo = GeoInfo(found=True, country="DE", asn=asn,
                  anonymous=frozenset({"is_residential_proxy"}) if flagged else frozenset())
    f = Facts(f"r{i}", "POST", "/v1/messages", ip, ip, account=f"acct_{i * 2654435761:020x}",
              api=apis.ANTHROPIC_MESSAGES, model="claude", max_output=512,
              input_tokens_est=800, user_agent="Anthropic/Python 0.40.0", geo=geo)
    if flagged:
        f.signals["ip.residential_proxy"] = True
    if tpl is not None:
        f.signals["template.id"] = tpl
    req = RequestView("POST", "/v1/messages", str(ip), {}.get,
                      tls_ja4=f"t13d1516h2_8daaf6152771_{rnd.randrange(50):012x}")
    return f, req


async def _run(n: int, bound: int | None, trace: bool = True) -> dict[str, object]:
    policy = load_policy(_policy(bound))
    gw = Gateway(policy, log_path="/dev/null", secret=b"bench", geo=None)
    links = gw.backends.links["account"]
    rnd = random.Random(11)
    prompts = [apis.ParsedRequest(apis.ANTHROPIC_MESSAGES, "claude", False, 1, 1,
                                  f"Template {k}: " + " ".join(rnd.choices(WORDS, k=60)),
                                  "", False, None) for k in range(500)]
    usage = Usage(800, 200)
    gc.collect()
    rss0 = rss_mib()
    if trace:
        tracemalloc.start(1)
    t0 = time.perf_counter()
    for i in range(n):
        f, req = _request(i, rnd)
        parsed = prompts[rnd.randrange(500)] if i % 100 == 0 else None
        f.signals.update(gw.signals.observe(f, req, parsed))
        if parsed is None and "template.id" not in f.signals and rnd.random() < 0.6:
            f.signals["template.id"] = f"tpl-{int(5000 * rnd.random() ** 2)}"
        set_cluster(f, gw.clusters.resolve(f))
        adm = await gw.budgets.admit(f)
        await gw.budgets.settle(adm, usage, failed=False)
    elapsed = time.perf_counter() - t0
    gc.collect()
    by = {name: 0 for name, _ in GROUPS}
    other = traced = overhead = 0
    stats_ = []
    if trace:
        stats_ = tracemalloc.take_snapshot().statistics("filename")
        traced = tracemalloc.get_traced_memory()[0]
        overhead = tracemalloc.get_tracemalloc_memory()
    rss1 = rss_mib()
    for st in stats_:
        fn = st.traceback[0].filename
        for name, parts in GROUPS:
            if any(p in fn for p in parts):
                by[name] += st.size
                break
        else:
            other += st.size
    by["signals"] += _mapped_bytes()
    lk = links.linker
    why_n = sum(len(u.why) for u in (lk._uf, lk._next))
    why_bytes = _why_bytes(lk)
    stats = {k: v for k, v in links.stats().items() if k != "backend"}
    state = gw.backends.state
    hist = gw.backends.history
    out = {"n": n, "elapsed_s": elapsed, "by": by, "other": other, "traced": traced,
           "rss": rss1 - rss0 - overhead / 2**20, "why_n": why_n, "why_bytes": why_bytes,
           "link": stats, "budget_keys": len(state), "history": len(hist) if hist else 0,
           "behaviour": {k: len(c) for k, c in gw.signals.behaviour.counters().items()},
           "bounds": {"link.max_accounts_tracked": lk.max_nodes, "state.max_keys":
                      state.max_keys, "history": hist.max_accounts if hist else 0,
                      "link.max_why": lk.config.max_why, "link.max_pairs": lk.config.max_pairs}}
    tracemalloc.stop()
    gw.close()
    return out


def _mapped_bytes() -> int:
    """Bytes of the signal tables' arrays that live in anonymous mappings (not traced)."""
    total = 0
    for obj in gc.get_objects():
        if isinstance(obj, KeyTable):
            for v in vars(obj).values() if hasattr(obj, "__dict__") else ():
                for a in v if isinstance(v, list) else (v,):
                    if isinstance(a, memoryview):
                        total += a.nbytes
    return total


def _why_bytes(lk: object) -> int:
    """Bytes held by the why-records (dict entries, the records and what they point to that
    nothing else holds: score, counts, time)."""
    total = 0
    for uf in (lk._uf, lk._next):
        w = uf.why
        total += sys.getsizeof(w) if len(w) else 0
        for rec in w.values():
            total += sys.getsizeof(rec) + sum(sys.getsizeof(x) for x in rec[1:])
    return total


def _child(n: int, bound: int | None, trace: bool) -> None:
    print(json.dumps(asyncio.run(_run(n, bound, trace))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--bound", type=int, default=None)
    ap.add_argument("--child", type=int, default=None)
    ap.add_argument("--no-trace", action="store_true")
    a = ap.parse_args()
    if a.child:
        _child(a.child, a.bound, not a.no_trace)
        return
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"Python {sys.version.split()[0]}; rules {RULES.relative_to(ROOT)}"
          f"{'' if a.bound is None else f' with every per-key bound = {a.bound:,}'}; "
          f"load average {' '.join(load)}")
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n)]
        if a.bound:
            cmd += ["--bound", str(a.bound)]
        res, bare = (json.loads(subprocess.run(c, check=True, capture_output=True, text=True
                                               ).stdout.splitlines()[-1])
                     for c in (cmd, [*cmd, "--no-trace"]))
        res["rss"] = bare["rss"]  # RSS growth of a run without tracemalloc
        rows.append(res)
        print(f"N={n:,}: {bare['elapsed_s'] / n * 1e6:.1f} µs/account for the whole request "
              f"path (without tracemalloc; load {Path('/proc/loadavg').read_text().split()[0]}); "
              f"bounds {res['bounds']}")
        print(f"  linker {res['link']}; budget keys {res['budget_keys']:,}; history "
              f"{res['history']:,}; behaviour keys {res['behaviour']}")
    print()
    head = "| component | " + " | ".join(f"N={r['n']:,}: MiB | B/account" for r in rows) + " |"
    print(head)
    print("|---|" + "---:|---:|" * len(rows))

    def line(name: str, vals: list[int]) -> None:
        cells = " | ".join(f"{v / 2**20:.1f} | {v / r['n']:.0f}" for v, r in zip(vals, rows,
                                                                                 strict=True))
        print(f"| {name} | {cells} |")

    for name, _ in GROUPS:
        line(name, [r["by"][name] for r in rows])
    line("other (account strings, IP objects, ...)", [r["other"] for r in rows])
    line("traced total", [r["traced"] for r in rows])
    line("RSS growth (run without tracemalloc)", [int(r["rss"] * 2**20) for r in rows])
    print()
    for r in rows:
        print(f"why-records at N={r['n']:,}: {r['why_n']:,} records (linked accounts only, "
              f"max_why {r['bounds']['link.max_why']:,} per union-find), "
              f"{r['why_bytes'] / 2**20:.1f} MiB ({r['why_bytes'] / max(1, r['why_n']):.0f} "
              f"B/record); links made {r['link']['links']:,}")


if __name__ == "__main__":
    main()
