"""In-process cost of hydraguard's pipeline per stage on bench/realistic.py's mix (no mitmproxy).

Run: .venv/bin/python bench/bench_pipeline.py [--n 6000] [--rounds 3] [--clock cpu|wall]
        [--rules default=rules/default.yaml,spine=bench/rules-spine.yaml]
        [--src old=/path/to/other/checkout/addon] [--no-stages]

Every target (rules file x source tree) runs in a child process of its own, once per round,
the targets interleaved round by round (a busy machine slows them alike). A child drives a
fresh `Gateway` through `begin` / `admit` / `finish` over the first `n` requests of the
realistic mix, with a fake clock advancing 2.5 ms per request (deterministic: two source trees
must write the same decision log lines, compared by digest with `decision_us` removed).
Stages are timed by wrapping methods (a wrapper costs ~0.2 µs; `--no-stages` times only the
three steps); Python's cyclic GC is timed through `gc.callbacks`.

Prints per target: per stage the calls per request, p50 / p99 µs per call, and µs per request
(mean over requests: what the stage adds to a request); the median over rounds of each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (label, module, class or "", attribute): wrapped when present in the code under test
STAGES = [
    ("begin", "hydraguard.pipeline", "Gateway", "begin"),
    ("  gather", "hydraguard.gather", "Gatherer", "gather"),
    ("    signals", "hydraguard.signals.collect", "SignalCollector", "observe"),
    ("      ip", "hydraguard.signals.collect", "SignalCollector", "_ip"),
    ("      headers", "hydraguard.signals.collect", "SignalCollector", "_headers"),
    ("      behaviour", "hydraguard.signals.collect", "SignalCollector", "_behaviour"),
    ("      prompts", "hydraguard.signals.collect", "SignalCollector", "_prompts"),
    ("        patterns", "hydraguard.signals.prompts", "PromptPatterns", "match"),
    ("        templates", "hydraguard.signals.templates", "TemplateMatcher", "observe"),
    ("          _packed", "hydraguard.signals.templates", "", "_packed"),
    ("          _minhash", "hydraguard.signals.templates", "", "_minhash"),
    ("          _candidates", "hydraguard.signals.templates", "TemplateMatcher", "_candidates"),
    ("          _verify", "hydraguard.signals.templates", "TemplateMatcher", "_verify"),
    ("          _new", "hydraguard.signals.templates", "TemplateMatcher", "_new"),
    ("          _drop", "hydraguard.signals.templates", "TemplateMatcher", "_drop"),
    ("          _count", "hydraguard.signals.templates", "TemplateMatcher", "_count"),
    ("    clusters", "hydraguard.clusters.resolve", "ClusterResolver", "resolve"),
    ("  decide", "hydraguard.pipeline", "", "decide"),
    ("admit", "hydraguard.pipeline", "Gateway", "admit"),
    ("finish", "hydraguard.pipeline", "Gateway", "finish"),
    ("  settle", "hydraguard.budgets.driver", "BudgetDriver", "settle"),
    ("  record", "hydraguard.pipeline", "", "decision_record"),
    ("  log write", "hydraguard.decision_log", "DecisionLog", "write"),
]

OK_ANTHROPIC = json.dumps({"id": "m", "type": "message", "role": "assistant",
                           "content": [{"type": "text", "text": "hi"}],
                           "usage": {"input_tokens": 2000, "output_tokens": 300}}).encode()
OK_CHAT = json.dumps({"id": "c", "object": "chat.completion", "choices": [],
                      "usage": {"prompt_tokens": 2000, "completion_tokens": 300,
                                "total_tokens": 2300}}).encode()
OK_RESPONSES = json.dumps({"id": "r", "object": "response", "output": [],
                           "usage": {"input_tokens": 2000, "output_tokens": 300,
                                     "total_tokens": 2300}}).encode()


def _requests(n: int) -> list[tuple[str, str, dict[str, str], bytes]]:
    sys.path.insert(0, str(ROOT / "bench"))
    from realistic import realistic_requests

    out = []
    for raw in realistic_requests(n=n):
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        out.append((method, path, headers, body))
    return out


def _wrap(samples: dict[str, list[int]], clock, stages: bool) -> None:
    import importlib

    for label, mod, cls, attr in STAGES if stages else STAGES[:1] + STAGES[18:20]:
        owner = importlib.import_module(mod)
        if cls:
            owner = getattr(owner, cls, None)
        fn = getattr(owner, attr, None) if owner is not None else None
        if fn is None:
            continue
        out = samples.setdefault(label.strip(), [])
        if asyncio.iscoroutinefunction(fn):
            async def w(*a, _f=fn, _o=out, **k):
                t0 = clock()
                r = await _f(*a, **k)
                _o.append(clock() - t0)
                return r
        else:
            def w(*a, _f=fn, _o=out, **k):
                t0 = clock()
                r = _f(*a, **k)
                _o.append(clock() - t0)
                return r
        setattr(owner, attr, w)


def child(args: argparse.Namespace) -> dict:
    clock = time.thread_time_ns if args.clock == "cpu" else time.perf_counter_ns
    samples: dict[str, list[int]] = {}
    _wrap(samples, clock, not args.no_stages)
    from hydraguard.pipeline import Gateway, RequestView
    from hydraguard.policy import load_policy

    reqs = _requests(args.n)
    gc_ns = [0, 0, 0]  # total, collections, start

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_ns[2] = clock()
        else:
            gc_ns[0] += clock() - gc_ns[2]
            gc_ns[1] += 1

    now = [1_790_000_000.0]
    fd, log_path = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    gw = Gateway(load_policy(args.child_rules), log_path=log_path, secret=b"bench",
                 clock=lambda: now[0])
    totals: list[int] = []

    async def run() -> None:
        for i, (method, path, headers, body) in enumerate(reqs):
            now[0] += 0.0025
            rv = RequestView(method, path, "127.0.0.1", headers.get, body, request_id=f"r{i}",
                             header_names=frozenset(headers))
            t0 = clock()
            ex = gw.begin(rv)
            if not ex.decision.enforced:
                await gw.admit(ex)
            answer = OK_ANTHROPIC if "messages" in path and "chat" not in path else (
                OK_CHAT if "chat" in path else OK_RESPONSES)
            await gw.finish(ex, status=200, body=answer)
            totals.append(clock() - t0)

    gc.callbacks.append(on_gc)
    wall = time.perf_counter()
    asyncio.run(run())
    wall = time.perf_counter() - wall
    gc.callbacks.remove(on_gc)
    gw.close()
    digest = hashlib.sha256()
    with open(log_path, "rb") as f:
        for line in f:
            rec = json.loads(line)
            rec.pop("decision_us", None)
            digest.update(json.dumps(rec, sort_keys=True).encode())
    os.unlink(log_path)
    n = len(reqs)
    out = {"n": n, "wall_us": wall / n * 1e6, "gc_us": gc_ns[0] / n / 1000, "gc_n": gc_ns[1],
           "digest": digest.hexdigest()[:16], "stages": {}}
    for label, v in [("request", totals), *samples.items()]:
        if not v:
            continue
        v.sort()
        out["stages"][label] = {"calls": len(v) / n, "p50": v[len(v) // 2] / 1000,
                                "p99": v[int(len(v) * 0.99)] / 1000,
                                "per_req": sum(v) / n / 1000}
    return out


def _summary(runs: list[dict]) -> dict:
    med = statistics.median
    stages: dict[str, dict[str, float]] = {}
    for label in runs[0]["stages"]:
        rows = [r["stages"][label] for r in runs if label in r["stages"]]
        stages[label] = {k: med([x[k] for x in rows]) for k in rows[0]}
    return {"stages": stages, "wall_us": med(r["wall_us"] for r in runs),
            "gc_us": med(r["gc_us"] for r in runs), "gc_n": med(r["gc_n"] for r in runs),
            "digests": sorted({r["digest"] for r in runs})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--rules", default="default=rules/default.yaml,spine=bench/rules-spine.yaml")
    ap.add_argument("--src", default="", help="name=path of other source trees' addon/ dirs "
                    "(the current tree is 'this')")
    ap.add_argument("--no-stages", action="store_true")
    ap.add_argument("--child-rules", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_rules:
        print(json.dumps(child(args)))
        return
    rules = [r.split("=", 1) for r in args.rules.split(",")]
    srcs = [("this", str(ROOT / "addon"))] + [s.split("=", 1) for s in args.src.split(",") if s]
    targets = [(f"{s}/{r}", path, str(ROOT / rpath)) for s, path in srcs for r, rpath in rules]
    results: dict[str, list[dict]] = {name: [] for name, _, _ in targets}
    for rnd in range(args.rounds):
        for name, path, rpath in targets:
            env = dict(os.environ, PYTHONPATH=path, PYTHONHASHSEED="0")
            cmd = [sys.executable, __file__, "--child-rules", rpath, "--n", str(args.n),
                   "--clock", args.clock] + (["--no-stages"] if args.no_stages else [])
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            results[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"round {rnd + 1} {name}: {results[name][-1]['stages']['request']['per_req']:.0f}"
                  f" µs/request", file=sys.stderr)
    sums = {name: _summary(runs) for name, runs in results.items()}
    names = list(sums)
    print(f"## Pipeline µs per stage, realistic mix, {args.n} requests, {args.clock} clock, "
          f"median of {args.rounds} rounds (load {os.getloadavg()[0]:.1f})\n")
    print("| stage | " + " | ".join(f"{n} calls/req | p50 | p99 | µs/req" for n in names) + " |")
    print("|---|" + "---|---|---|---|" * len(names))
    labels = list(dict.fromkeys(k for s in sums.values() for k in s["stages"]))
    for label in labels:
        cells = []
        for n in names:
            st = sums[n]["stages"].get(label)
            cells.append(" - | - | - | -" if st is None else
                         f"{st['calls']:.2f} | {st['p50']:.1f} | {st['p99']:.0f} | "
                         f"{st['per_req']:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| cyclic GC | " + " | ".join(f"{sums[n]['gc_n']:.0f} runs | | | {sums[n]['gc_us']:.1f}"
                                       for n in names) + " |")
    print("| wall per request | " + " | ".join(f" | | | {sums[n]['wall_us']:.1f}"
                                              for n in names) + " |")
    print()
    for n in names:
        print(f"{n}: log digest {', '.join(sums[n]['digests'])}")


if __name__ == "__main__":
    main()
