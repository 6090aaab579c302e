"""How far a shared Redis budget is overshot under concurrent bursts on real replicas.

Starts the stand-in upstream and ``--replicas`` real ``hydraguard run`` processes sharing one
Redis (a fresh key prefix), one account with a ``--budget`` token budget (one day window,
weighted total), then sends ``--bursts`` bursts of ``--burst`` concurrent requests, spread
round-robin over the replicas and mixing Anthropic Messages and OpenAI Chat, JSON and SSE.
Prints the tokens served (input + output of every 200, from the decision logs) over the
budget, the requests marked ``state_degraded`` and which backend answered them
(``state_backend``), and the replicas' ``budget state DOWN`` lines. The stand-in upstream
uses each request's whole output allowance, so a request costs what it reserved (up to the
input estimate).

    .venv/bin/python bench/bench_overshoot.py [--replicas 2] [--burst 64] [--bursts 8]
        [--budget 20000] [--timeout-ms MS] [--replicas-key] [--outage S] [--rounds 1]
        [--redis-url URL]

Overshoot is a property of the whole machine (2 shared cores here): run it on an otherwise
idle machine and compare figures only from the same machine. ``--timeout-ms`` overrides the
rules' ``state.timeout_ms`` (default: the shipped default).

``--outage S``: a private ``redis-server`` instead, and bursts back to back for ``S + 20``
seconds; Redis is stopped 4 s in and started again (empty) ``S`` seconds later. Prints the
same figures plus the DOWN / RECOVERED lines per replica and how many requests were still
answered without Redis after it was back (and until when).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import redis

from hydraguard_dev.procs import free_port, proxy, upstream, wait_until

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
state:
  backend: redis
  redis_url: "{url}"
  prefix: {prefix}
{extra}
clusters:
  - id: acct
    key: [account]
budgets:
  - id: budget
    windows: [{{per: day, tokens: {budget}}}]
"""

PROMPT = "Summarise the plot of a short story about a lighthouse keeper. " * 3


def request(i: int, key: str, rng: random.Random) -> tuple[str, dict, dict]:
    """(path, headers, body) of request ``i``: the four kinds in turn."""
    n = rng.randint(100, 400)
    stream = i % 4 >= 2
    used = {"x-stub-output-tokens": str(n)}  # the whole output allowance is used
    if i % 2 == 0:
        body = {"model": "claude-bench", "max_tokens": n, "stream": stream,
                "messages": [{"role": "user", "content": PROMPT}]}
        return "/v1/messages", {"x-api-key": key, "anthropic-version": "2023-06-01", **used}, body
    body = {"model": "gpt-bench", "max_tokens": n, "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return "/v1/chat/completions", {"authorization": f"Bearer {key}", **used}, body


async def one(client: httpx.AsyncClient, url: str, path: str, headers: dict, body: dict
              ) -> int:
    try:
        async with client.stream("POST", url + path, json=body, headers=headers) as r:
            async for _ in r.aiter_raw():
                pass
            return r.status_code
    except httpx.HTTPError:
        return -1


async def bursts(urls: list[str], key: str, burst: int, n_bursts: int, seed: int,
                 until: float | None = None) -> list[int]:
    """``n_bursts`` bursts, or bursts back to back until ``until`` (time.monotonic)."""
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=burst * 2, max_keepalive_connections=burst * 2)
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        i = 0
        n = 0
        while (n < n_bursts) if until is None else (time.monotonic() < until):
            n += 1
            jobs = []
            for _ in range(burst):
                path, headers, body = request(i, key, rng)
                jobs.append(one(client, urls[i % len(urls)], path, headers, body))
                i += 1
            statuses += await asyncio.gather(*jobs)
    return statuses


def summarise(records: list[dict], budget: int) -> dict:
    ok = [r for r in records if r.get("status") == 200]
    served = sum((r.get("input_tokens") or 0) + (r.get("output_tokens") or 0) for r in ok)
    charged = sum(e.get("charged") or 0 for r in ok for e in r.get("budget") or ())
    degraded = [r for r in records if r.get("state_degraded")]
    backends: dict[str, int] = {}
    for r in degraded:
        b = str(r.get("state_backend", "none"))
        backends[b] = backends.get(b, 0) + 1
    return {"requests": len(records), "ok": len(ok), "served": served, "charged": charged,
            "ratio": served / budget, "degraded": len(degraded), "degraded_by": backends}


class Server:
    """A private redis-server on a free port that can be stopped and started again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("--outage needs redis-server on PATH")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL)
        c = redis.Redis(port=self.port, socket_timeout=0.2)
        wait_until(lambda: c.ping(), 10.0, "redis-server")
        c.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _ts(record: dict) -> float:
    return datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()


def run_outage(args: argparse.Namespace) -> None:
    """Bursts while Redis goes away for ``args.outage`` seconds (see module doc)."""
    srv = Server()
    srv.start()
    marks: dict[str, float] = {}

    def outage() -> None:
        time.sleep(4.0)
        srv.stop()
        marks["stopped"] = time.time()
        time.sleep(args.outage)
        srv.start()
        marks["started"] = time.time()

    try:
        res = run_once(args, srv.url, 0, during=outage, seconds=args.outage + 20.0)
    finally:
        srv.stop()
    records, procs_err = res.pop("records"), res.pop("stderr")
    late = [r for r in records if r.get("state_degraded") and _ts(r) > marks["started"]]
    tail = max((_ts(r) for r in late), default=marks["started"]) - marks["started"]
    during = [r for r in records if marks["stopped"] <= _ts(r) <= marks["started"]]
    print(f"outage {args.outage:g} s: served {res['served']} / budget {args.budget} = "
          f"{res['ratio']:.3f} x; ok {res['ok']}/{res['requests']}; served during the outage "
          f"{sum((r['input_tokens'] or 0) + (r['output_tokens'] or 0) for r in during if r['status'] == 200)}; "  # noqa: E501
          f"degraded {res['degraded']} {res['degraded_by']}; after Redis was back: "
          f"{len(late)} degraded, the last {tail:.1f} s after")
    for i, err in enumerate(procs_err):
        print(f"  replica {i}: DOWN lines {err.count('budget state DOWN')}, RECOVERED lines "
              f"{err.count('budget state RECOVERED')}")


def run_once(args: argparse.Namespace, url: str, round_no: int, during=None,
             seconds: float | None = None) -> dict:
    prefix = f"hgover-{uuid.uuid4().hex[:8]}"
    extra = f"  timeout_ms: {args.timeout_ms}\n" if args.timeout_ms else ""
    if args.replicas_key:
        extra += f"  replicas: {args.replicas}\n"
    rules_text = RULES.format(url=url, prefix=prefix, extra=extra, budget=args.budget)
    with tempfile.TemporaryDirectory() as d, upstream() as up, contextlib.ExitStack() as stack:
        rules = Path(d) / "rules.yaml"
        rules.write_text(rules_text)
        procs = [stack.enter_context(proxy(up.url, rules)) for _ in range(args.replicas)]
        key = "sk-bench-" + uuid.uuid4().hex
        until = None
        if during is not None:
            threading.Thread(target=during, daemon=True).start()
            until = time.monotonic() + (seconds or 0.0)
        statuses = asyncio.run(bursts([p.url for p in procs], key, args.burst, args.bursts,
                                      seed=round_no, until=until))
        with contextlib.suppress(TimeoutError):  # a record can lag its response a little
            wait_until(lambda: sum(len(p.lines()) for p in procs) >= len(statuses), 10.0,
                       "every decision log record")
        records = [r for p in procs for r in p.lines()]
        res = summarise(records, args.budget)
        res["statuses"] = {s: statuses.count(s) for s in sorted(set(statuses))}
        res["down_lines"] = sum(p.stderr().count("budget state DOWN") for p in procs)
        if during is not None:
            res["records"], res["stderr"] = records, [p.stderr() for p in procs]
        with contextlib.suppress(redis.RedisError):
            c = redis.Redis.from_url(url)
            keys = list(c.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                c.delete(*keys)
            c.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--burst", type=int, default=64)
    ap.add_argument("--bursts", type=int, default=8)
    ap.add_argument("--budget", type=int, default=20_000)
    ap.add_argument("--timeout-ms", type=int, default=0)
    ap.add_argument("--replicas-key", action="store_true",
                    help="write `replicas: N` into the state section (rules of before that "
                    "key existed reject it)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--outage", type=float, default=0.0,
                    help="seconds of Redis outage (private redis-server; see module doc)")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    if args.outage:
        run_outage(args)
        return 0
    ratios = []
    for n in range(args.rounds):
        res = run_once(args, args.redis_url, n)
        ratios.append(res["ratio"])
        print(f"round {n}: served {res['served']} / budget {args.budget} = {res['ratio']:.3f} x;"
              f" ok {res['ok']}/{res['requests']}; statuses {res['statuses']};"
              f" charged {res['charged']}; degraded {res['degraded']} {res['degraded_by']};"
              f" DOWN lines {res['down_lines']}", flush=True)
    if len(ratios) > 1:
        print(f"median {statistics.median(ratios):.3f} x, max {max(ratios):.3f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
