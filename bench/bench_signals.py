"""Micro-benchmark of the indicator library: µs per call and RSS of the behaviour tracker.

Run: .venv/bin/python bench/bench_signals.py [--quick]
"""

from __future__ import annotations

import gc
import ipaddress
import random
import sys
import time
import timeit

from benchutil import python_client_hello, rss_mib
from mitmproxy.tls import ClientHello

from hydraguard.addresses import CidrSet
from hydraguard.clusters import ClusterLinker
from hydraguard.signals.behaviour import BehaviourConfig, BehaviourTracker
from hydraguard.signals.ja4 import ja4, ja4_from_raw
from hydraguard.signals.prompts import PromptPatterns
from hydraguard.signals.proxy_headers import proxy_header_signals
from hydraguard.signals.templates import TemplateMatcher


def _prompt(n: int, rnd: random.Random) -> str:
    words = [
        "the",
        "model",
        "should",
        "answer",
        "every",
        "question",
        "carefully",
        "and",
        "cite",
        "the",
        "relevant",
        "source",
        "documents",
        "while",
        "keeping",
        "a",
        "formal",
        "tone",
        "and",
        "avoiding",
        "speculation",
        "about",
        "unknown",
        "facts",
        "customer",
        "order",
        "invoice",
        "shipping",
        "refund",
        "policy",
        "account",
        "billing",
        "region",
    ]
    text = []
    size = 0
    while size < n:
        w = rnd.choice(words)
        text.append(w)
        size += len(w) + 1
    return " ".join(text)[:n]


def bench(name: str, fn, number: int) -> float:
    fn()
    best = min(timeit.repeat(fn, number=number, repeat=5)) / number
    return best * 1e6


def link_rows(quick: bool) -> None:
    """Hydra linking per request (not a signal, but the same per-request CPU budget): a
    linker holding 20k accounts; an account seen again, and a new account whose exit and
    template are shared (scored against its candidates)."""
    t = [0.0]
    lk = ClusterLinker(clock=lambda: t[0])
    for i in range(10_000):  # ordinary accounts: own address, own prompts
        t[0] += 0.01
        lk.observe(f"o{i}", {"ip": f"46.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                             "prefix": f"46.{i >> 16 & 255}.{i >> 8 & 255}.0/24",
                             "template": f"t{i}"})
    n = [0]

    def hydra() -> None:  # 40 flagged exits in one /24, 6 templates
        n[0] += 1
        t[0] += 0.05
        lk.observe(f"h{n[0]}", {"ip": f"95.90.0.{n[0] % 40}", "prefix": "95.90.0.0/24",
                                "template": f"T{n[0] % 6}"}, flagged=True)
        lk.cluster_of(f"h{n[0]}")

    m = [0]

    def again() -> None:
        m[0] += 1
        t[0] += 0.001
        i = m[0] % 1000
        lk.observe(f"o{i}", {"ip": f"46.0.{i >> 8 & 255}.{i & 255}",
                             "prefix": f"46.0.{i >> 8 & 255}.0/24", "template": f"t{i}"})
        lk.cluster_of(f"o{i}")

    print()
    print(f"{'hydra linking (observe + cluster_of)':<46} {'µs/call':>9}")
    print("-" * 56)
    for name, fn in (("account seen again", again),
                     ("new account, shared flagged exit + template", hydra)):
        print(f"{name:<46} {bench(name, fn, 400 if quick else 2000):>9.1f}")
    print(f"  linker: {lk.stats()}")


def main() -> None:
    quick = "--quick" in sys.argv
    rnd = random.Random(7)
    hello_record = python_client_hello()
    ch = ClientHello(hello_record[9:])

    headers = {
        "host": "api.example.com",
        "user-agent": "Anthropic/Python 0.40.0",
        "content-type": "application/json",
        "x-api-key": "sk-...",
        "anthropic-version": "2023-06-01",
        "x-stainless-lang": "python",
        "x-stainless-runtime": "CPython",
        "accept": "application/json",
        "x-forwarded-for": "203.0.113.9",
        "content-length": "8192",
    }

    nets = set()
    while len(nets) < 9000:
        nets.add(ipaddress.ip_network((rnd.getrandbits(32), rnd.randint(12, 28)), strict=False))
    while len(nets) < 10000:
        nets.add(ipaddress.ip_network((rnd.getrandbits(128), rnd.randint(32, 64)), strict=False))
    cidrs = CidrSet(nets)
    probe_ips = [str(ipaddress.IPv4Address(rnd.getrandbits(32))) for _ in range(1000)]
    it_ip = iter(probe_ips * 10_000)

    tracker = BehaviourTracker(BehaviourConfig(max_keys=100_000, max_members_per_key=1000))
    counter = iter(range(10**9))

    def track() -> None:
        i = next(counter)
        tracker.update(f"198.51.{(i >> 8) & 255}.{i & 255}", f"acct{i % 5000}", 64500 + i % 7, "US")

    prompt8k = _prompt(8192, rnd)
    system = _prompt(2048, rnd)
    patterns = PromptPatterns()
    templates = TemplateMatcher()
    acct = iter(range(10**9))

    rows = [
        ("ja4(mitmproxy ClientHello)", lambda: ja4(ch), 2000),
        ("ja4_from_raw(record)", lambda: ja4_from_raw(hello_record), 2000),
        ("proxy_header_signals (10 headers)", lambda: proxy_header_signals(headers, False), 20000),
        ("CidrSet.contains (10k CIDRs)", lambda: cidrs.contains(next(it_ip)), 20000),
        ("BehaviourTracker.update", track, 20000),
        (
            "PromptPatterns.match (2 KB sys + 8 KB user)",
            lambda: patterns.match(system, prompt8k),
            2000,
        ),
        (
            "TemplateMatcher.observe (2 KB sys + 8 KB user)",
            lambda: templates.observe(system, prompt8k, f"a{next(acct)}"),
            1000,
        ),
    ]
    print(f"Python {sys.version.split()[0]}; best of 5 repeats")
    print(f"{'operation':<46} {'µs/call':>9}")
    print("-" * 56)
    total = 0.0
    ja4_counted = False
    for name, fn, number in rows:
        us = bench(name, fn, number if not quick else max(100, number // 10))
        if name.startswith("ja4_from_raw"):
            pass  # alternative to ja4(); not added to the total
        elif name.startswith("ja4"):
            total += us
            ja4_counted = True
        else:
            total += us
        print(f"{name:<46} {us:>9.1f}")
    assert ja4_counted
    print("-" * 56)
    print(f"{'total per request (ja4 + all others)':<46} {total:>9.1f}   (target <= 300)")

    link_rows(quick)

    n = 200_000 if quick else 1_000_000
    cfg = BehaviourConfig(window_s=3600, max_keys=100_000, max_members_per_key=1000)
    gc.collect()
    before = rss_mib()
    t = BehaviourTracker(cfg)
    t0 = time.perf_counter()
    for i in range(n):
        t.update(
            f"{10 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
            f"a{i}",
            64500 + (i & 1023),
            "US",
        )
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_mib()
    keys = {name: len(c) for name, c in t.counters().items()}
    print()
    print(
        f"BehaviourTracker, {n:,} distinct IPs + accounts, max_keys={cfg.max_keys:,} per counter:"
    )
    print(
        f"  RSS before {before:.1f} MiB, after {after:.1f} MiB, growth {after - before:.1f} MiB;"
        f" {elapsed / n * 1e6:.1f} µs/update"
    )
    print(f"  keys held: {keys}")


if __name__ == "__main__":
    main()
