"""Latency of the per-request budget path: cluster resolution + reserve + commit.

Prints p50/p99 in microseconds for the memory backend (target p99 <= 50 us) and for Redis
on loopback (target p99 <= 1 ms).  The backends run in interleaved rounds (default 7 rounds
of 3,000 requests each, after a warm-up), so a burst of noise on a shared machine hits one
round of every backend rather than all of one; each round gives its own p50/p99, and the
table shows the median round and the range of the rounds' p99.  A target is met when the
median round's p99 is within it; "met" counts the rounds within it, and "pooled p99" is
the p99 of all rounds' samples together.

Redis runs two ways.  ``redis`` rows: the server at ``--redis-url`` (by default the
machine's own), the scheduler free to put the bench and the server on different CPUs.
``redis/1cpu`` rows: a private ``redis-server`` started by the bench, the bench and that
server pinned to one CPU (while those rows run).  On small VMs waking a process on another
vCPU costs an inter-processor interrupt through the hypervisor, which can be most of a
loopback round trip; the pair of rows shows how much of the latency is that.

    .venv/bin/python bench/bench_budgets.py [--rounds R] [--iterations N] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

from hydraguard.budgets import MemoryBudgetState, RedisBudgetState, WindowSpec
from hydraguard.clusters import DEFAULT_LINK_RULES, ClusterLinker, cluster_key
from hydraguard.clusters.redis_links import RedisLinks
from hydraguard.policy.budget_model import LinkConfig
from hydraguard_dev.procs import free_port, wait_until

WINDOWS = (WindowSpec("minute", 200_000, 60.0), WindowSpec("day", 50_000_000, 86_400.0))
TEMPLATE = ("cluster", "model")
LINKING = LinkConfig(3600.0, 100_000, DEFAULT_LINK_RULES)


def evidence(i: int) -> dict[str, str]:
    """Hydra groups of 10 accounts: one flagged exit and one prompt template per group."""
    g = i // 10
    return {"ip": f"10.0.{g // 256}.{g % 256}", "template": f"tpl-{g}"}


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(
    state, iterations: int, warmup: int = 300, links=None, model: str = "m-1"
) -> dict[str, list[float]]:
    """`links`: a RedisLinks; cluster resolution then includes the shared linking script."""
    linker = ClusterLinker(config=LINKING)
    # a populated linker: 10k accounts, hydra groups of 10 sharing a flagged exit + template
    for i in range(10_000):
        linker.observe(f"acct{i}", evidence(i), flagged=True)
    gc.collect()
    gc.freeze()  # long-lived start-up objects out of the collector's way, as in a proxy
    out: dict[str, list[float]] = {"resolve": [], "reserve": [], "commit": [], "total": []}
    ns = time.perf_counter_ns
    for n in range(warmup + iterations):
        i = n % 1_000  # 1,000 active accounts (each seen again: realistic for a cache)
        account = f"acct{i}"
        t0 = ns()
        linker.observe(account, evidence(i), flagged=True)
        cluster = linker.cluster_of(account)
        pending = None
        if links is not None:  # as metering.py: shared linking concurrent with the reserve
            cluster = links.last_answer(account) or cluster
            pending = asyncio.ensure_future(links.cluster_of(account, evidence(i),
                                                             flagged=True))
        key = cluster_key(TEMPLATE, {"cluster": cluster, "model": model})
        t1 = ns()
        r = await state.reserve(key, WINDOWS, 1000)
        if pending is not None:
            await pending
        t2 = ns()
        if r.reservation is not None:
            await state.commit(r.reservation, 700)
        t3 = ns()
        if not r.ok or r.degraded:
            raise SystemExit(f"unexpected reserve result: {r}")
        if n >= warmup:
            out["resolve"].append((t1 - t0) / 1000)
            out["reserve"].append((t2 - t1) / 1000)
            out["commit"].append((t3 - t2) / 1000)
            out["total"].append((t3 - t0) / 1000)
    return out


def print_table(rows: list[tuple[str, float, list[dict[str, list[float]]]]]) -> bool:
    """One line per backend and stage from the rounds' results; True if every target holds."""
    print(
        f"{'backend':<16} {'stage':<8} {'rounds':>6} {'p50 us':>8} {'p99 us':>8}"
        f" {'p99 range us':>15} {'pooled p99':>10} {'target':>7}  {'met':>5}  ok"
    )
    all_ok = True
    for backend, target, rounds in rows:
        for stage in rounds[0]:
            p50 = statistics.median(pct(r[stage], 0.50) for r in rounds)
            p99s = [pct(r[stage], 0.99) for r in rounds]
            p99 = statistics.median(p99s)
            span = f"{min(p99s):.1f}-{max(p99s):.1f}"
            pooled = pct([x for r in rounds for x in r[stage]], 0.99)
            tgt = met = mark = ""
            if stage == "total":
                ok = p99 <= target
                all_ok &= ok
                tgt, mark = f"{target:.0f}", "yes" if ok else "NO"
                met = f"{sum(x <= target for x in p99s)}/{len(p99s)}"
            print(
                f"{backend:<16} {stage:<8} {len(rounds):>6} {p50:>8.1f} {p99:>8.1f}"
                f" {span:>15} {pooled:>10.1f} {tgt:>7}  {met:>5}  {mark}"
            )
    return all_ok


@contextlib.contextmanager
def private_redis(cpu: int) -> Iterator[str | None]:
    """A throwaway redis-server pinned to ``cpu``: its URL, or None without redis-server."""
    binary = shutil.which("redis-server")
    if binary is None or not hasattr(os, "sched_setaffinity"):  # no server, or not Linux
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        os.sched_setaffinity(proc.pid, {cpu})
        import redis  # the sync client, only to wait for the server

        def up() -> bool:
            try:
                return bool(redis.Redis(port=port, socket_timeout=0.2).ping())
            except redis.RedisError:
                return False

        wait_until(up, 10.0, "private redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def redis_available(red: RedisBudgetState) -> str | None:
    """None if Redis answers, else why not."""
    try:
        if await red._r.ping():
            return None
        return "no PONG"
    except Exception as exc:  # any failure: skip the Redis rows
        return f"{type(exc).__name__}: {exc}"


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=2000, help="requests per round")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    pin = getattr(os, "sched_setaffinity", lambda _pid, _cpus: None)  # Linux only
    all_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {0}
    one_cpu = {max(all_cpus)}
    with private_redis(max(all_cpus)) as own_url:
        async with contextlib.AsyncExitStack() as stack:
            mem = MemoryBudgetState(max_keys=100_000)
            stack.push_async_callback(mem.close)
            backends = [("memory", 50.0, mem, None, all_cpus)]
            prefix = f"hgbench-{uuid.uuid4().hex[:8]}"
            servers = (("redis", args.redis_url, all_cpus), ("redis/1cpu", own_url, one_cpu))
            for name, url, cpus in servers:
                if url is None:
                    print(f"{name}: skipped (needs redis-server on PATH and Linux CPU pinning)",
                      file=sys.stderr)
                    continue
                red = RedisBudgetState(url, prefix=prefix, timeout_ms=1000, on_error="closed")
                stack.push_async_callback(cleanup, red, prefix)
                why = await redis_available(red)
                if why:
                    print(f"{name}: skipped ({why})", file=sys.stderr)
                    continue
                links = RedisLinks(red, "bench", LINKING)
                backends.append((name, 1000.0, red, None, cpus))
                backends.append((f"{name}+link", 1000.0, red, links, cpus))
            results: dict[str, list[dict[str, list[float]]]] = {b[0]: [] for b in backends}
            for n in range(args.rounds):  # fresh buckets each round (a model name per round)
                for name, _target, state, lk, cpus in backends:
                    pin(0, cpus)
                    res = await run(state, args.iterations, links=lk, model=f"m-{n}")
                    results[name].append(res)
            pin(0, all_cpus)
    rows = [(b[0], b[1], results[b[0]]) for b in backends]
    return 0 if print_table(rows) else 1


async def cleanup(red: RedisBudgetState, prefix: str) -> None:
    """Delete the bench's keys (best effort) and close the client."""
    try:
        keys = [k async for k in red._r.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await red._r.delete(*keys)
    except Exception:  # Redis gone: nothing to clean
        pass
    await red.close()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
