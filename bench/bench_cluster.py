"""Requests/s and Redis operations per request: single Redis vs a 3-master Redis Cluster.

For each topology (a private single ``redis-server``; a private 3-master cluster, see
tests/redis_cluster_util.py) and each replica count (1, 2) this starts the stand-in upstream
and real ``hydraguard run`` replicas (``state: {backend: redis}``, with ``cluster: true`` on
the cluster), sends ``--requests`` Anthropic Messages requests with ``--concurrency`` in
flight, round-robin over the replicas, from ``--accounts`` accounts (``--group`` accounts
behind each client IP: 1, each its own exit, never scored; more, every account's first request
of the window scores the shared exit and /24, crediting pair scores; all under a linked
cluster definition, so every request runs the linking and the budget scripts), and reads
``INFO commandstats`` of every node before and after.

Prints per run: requests/s (wall clock, 200s only counted as served), script calls
(``EVALSHA``: round trips) per request, Redis commands per request (the scripts' inner
commands included), Redis CPU µs per request (``usec`` of the scripts) and how the script
calls, commands and CPU split over the masters.  ``--json`` writes the rows.

    .venv/bin/python bench/bench_cluster.py [--requests 1500] [--concurrency 32]
        [--accounts 300] [--group 1] [--topology single,cluster] [--json out.json]

This machine has 2 cores shared by everything (load generator, replicas, Redis nodes): the
requests/s are a floor, the per-request Redis figures are what the capacity model uses
(README, "Scale-out on Redis Cluster").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydraguard_dev.procs import free_port, proxy, upstream, wait_until  # noqa: E402
from tests.redis_cluster_util import redis_cluster  # noqa: E402

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
state: {{backend: redis, redis_url: "{url}", prefix: {prefix}, cluster: {cluster},
         replicas: {replicas}}}
clusters:
  - id: linked
    key: [cluster]
    link: {{window: 3600, evidence: [{{kind: ip, max_accounts: 100}}, {{kind: prefix}}]}}
budgets:
  - id: shared
    windows: [{{per: day, tokens: 100000000}}]
    count: output
"""


@contextlib.contextmanager
def single_redis():
    """A private single redis-server on a free port (yields a cluster-like handle)."""
    tmp = tempfile.mkdtemp(prefix="hg-bench-redis-")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ping(url), 20, "redis-server")
        yield type("Single", (), {"url": url, "nodes": [url]})()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def commandstats(url: str) -> dict[str, dict[str, float]]:
    c = redis.Redis.from_url(url)
    try:
        return c.info("commandstats")
    finally:
        c.close()


def delta(before: dict, after: dict) -> tuple[int, int, float]:
    """(EVALSHA calls, all calls, EVALSHA usec) between two commandstats readings."""
    def calls(d, k):
        return d.get(k, {}).get("calls", 0)
    ev = calls(after, "cmdstat_evalsha") - calls(before, "cmdstat_evalsha")
    total = sum(v["calls"] for v in after.values()) - sum(v["calls"] for v in before.values())
    usec = after.get("cmdstat_evalsha", {}).get("usec", 0) - \
        before.get("cmdstat_evalsha", {}).get("usec", 0)
    return ev, total, usec


async def drive(urls: list[str], n: int, conc: int, accounts: int, group: int = 1
                ) -> tuple[float, int]:
    tag = uuid.uuid4().hex[:6]
    served = 0
    sem = asyncio.Semaphore(conc)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal served
        a = i % accounts
        x = a // group
        ip = f"10.{(x >> 8) & 255}.{x & 255}.7"
        body = {"model": "bench-m", "max_tokens": 8,
                "messages": [{"role": "user", "content": "hi"}]}
        async with sem:
            r = await client.post(urls[i % len(urls)] + "/v1/messages", json=body, headers={
                "x-api-key": f"sk-bench-{tag}-{a}", "anthropic-version": "2023-06-01",
                "x-forwarded-for": ip})
        served += r.status_code == 200

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=conc)) as c:
        await asyncio.gather(*(one(c, i) for i in range(min(conc, n))))  # warm-up
        t0 = time.perf_counter()
        served = 0
        await asyncio.gather(*(one(c, i) for i in range(n)))
        return time.perf_counter() - t0, served


def run(topology: str, handle, replicas: int, args, stub_url: str) -> dict:
    rules = Path(tempfile.mkdtemp(prefix="hg-bench-rules-")) / "rules.yaml"
    rules.write_text(RULES.format(url=handle.url, prefix=f"hgb{uuid.uuid4().hex[:6]}",
                                  cluster=str(topology == "cluster").lower(),
                                  replicas=replicas))
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(proxy(stub_url, rules)) for _ in range(replicas)]
        urls = [p.url for p in procs]
        asyncio.run(drive(urls, 50, 8, 50))  # connections and scripts loaded
        before = {n: commandstats(n) for n in handle.nodes}
        wall, served = asyncio.run(drive(urls, args.requests, args.concurrency, args.accounts,
                                         args.group))
        after = {n: commandstats(n) for n in handle.nodes}
    per = {n: delta(before[n], after[n]) for n in handle.nodes}
    ev = sum(x[0] for x in per.values())
    total = sum(x[1] for x in per.values())
    usec = sum(x[2] for x in per.values())
    n = args.requests
    return {"topology": topology, "replicas": replicas, "group": args.group, "requests": n,
            "served": served, "load": os.getloadavg()[0],
            "rps": round(n / wall, 1), "evalsha_per_req": round(ev / n, 2),
            "commands_per_req": round(total / n, 2), "redis_us_per_req": round(usec / n, 1),
            "per_master_evalsha_share": [round(x[0] / max(ev, 1), 3) for x in per.values()],
            "per_master_us_per_req": [round(x[2] / n, 1) for x in per.values()],
            "per_master_commands_per_req": [round(x[1] / n, 2) for x in per.values()]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--accounts", type=int, default=300)
    ap.add_argument("--group", type=int, default=1, help="accounts per client IP")
    ap.add_argument("--topology", default="single,cluster")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with upstream() as stub:
        for topology, make in (("single", single_redis), ("cluster", redis_cluster)):
            if topology not in args.topology.split(","):
                continue
            with make() as handle:
                for replicas in (1, 2):
                    row = run(topology, handle, replicas, args, stub.url)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
