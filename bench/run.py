"""Bare mitmdump vs hydraguard in one run, same stand-in upstream.

    .venv/bin/python bench/run.py [--seconds 5] [--rules rules/default.yaml]

Prints a markdown table: requests/s at 1, 8 and 32 connections, p50/p99 latency, SSE time to
first event, peak RSS of each proxy, and hydraguard's ratio to bare mitmdump.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydraguard_dev.procs import free_port, upstream, wait_until

ROOT = Path(__file__).resolve().parents[1]

BODY = json.dumps({"model": "claude-haiku-4", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Say hello in five words."}]}).encode()


def request_bytes(port: int, stream: bool = False) -> bytes:
    body = BODY if not stream else BODY.replace(b'"max_tokens"', b'"stream":true,"max_tokens"')
    return (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "x-api-key: sk-bench-key\r\nanthropic-version: 2023-06-01\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, float | None]:
    """Read one HTTP/1.1 response; returns (status, seconds to first body byte or None)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
        return status, None
    first: float | None = None
    while True:  # chunked
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.strip().split(b";")[0], 16)
        if first is None:
            first = time.perf_counter()
        data = await reader.readexactly(size + 2)
        if size == 0:
            return status, first
        del data


async def load(port: int, conns: int, seconds: float) -> tuple[float, list[float]]:
    payload = request_bytes(port)
    lat: list[float] = []
    errors: dict[int, int] = {}
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                writer.write(payload)
                status, _ = await read_response(reader)
                if status != 200:
                    errors[status] = errors.get(status, 0) + 1
                    continue
                lat.append(time.perf_counter() - t0)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    if errors:
        print(f"  port {port}, {conns} conns: non-200 answers {errors}", file=sys.stderr)
    return len(lat) / (time.perf_counter() - t0), lat


async def ttfe(port: int, n: int) -> list[float]:
    payload = request_bytes(port, stream=True)
    out = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(n):
        t0 = time.perf_counter()
        writer.write(payload)
        status, first = await read_response(reader)
        assert status == 200 and first is not None
        out.append(first - t0)
    writer.close()
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(cmd: list[str], port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HYDRAGUARD_ACCOUNT_SECRET": "bench"})

    def ready() -> bool:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", content=BODY,
                       headers={"x-api-key": "k"}, timeout=2)
        return r.status_code == 200

    wait_until(ready, 30, f"proxy on {port}")
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0, help="per cell and target")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    ap.add_argument("--rules", action="append",
                    help="rules file(s) to bench, one hydraguard column each (default: "
                    "rules/default.yaml and bench/rules-spine.yaml)")
    a = ap.parse_args()
    a.rules = a.rules or [str(ROOT / "rules" / "default.yaml"),
                          str(ROOT / "bench" / "rules-spine.yaml")]
    mitmdump = str(Path(sys.executable).parent / "mitmdump")
    results: dict[str, dict[str, float]] = {}
    with upstream() as up, tempfile.TemporaryDirectory() as d:
        bare_port = free_port()
        common = ["--listen-host", "127.0.0.1", "--set", "flow_detail=0",
                  "--set", "termlog_verbosity=warn", "--set", "connection_strategy=lazy"]
        lean_port = free_port()
        targets = {"bare mitmdump": (bare_port, start(
            [mitmdump, "--mode", f"reverse:{up.url}", "--listen-port", str(bare_port),
             *common], bare_port))}
        # mitmdump minus the addons `hydraguard run` drops (hydraguard/runner.py), without
        # hydraguard: shows the addon's own cost apart from the leaner mitmproxy
        targets["lean mitmdump"] = (lean_port, start(
            [sys.executable, "-m", "hydraguard.runner", "--mode", f"reverse:{up.url}",
             "--listen-port", str(lean_port), *common], lean_port))
        for rules in a.rules:
            port = free_port()
            name = f"hydraguard {Path(rules).name}"
            targets[name] = (port, start(
                [sys.executable, "-m", "hydraguard", "run", "--upstream", up.url,
                 "--listen", f"127.0.0.1:{port}", "--rules", rules,
                 "--log", f"{d}/{len(targets)}.jsonl",
                 "--status", f"{d}/{len(targets)}.status.json"], port))
        try:
            for port, _ in targets.values():
                asyncio.run(load(port, 8, 1.0))  # warm-up
            for conns in (1, 8, 32):
                # interleaved rounds: slow drifts of the shared machine hit every target alike
                lats: dict[str, list[float]] = {n: [] for n in targets}
                rates: dict[str, list[float]] = {n: [] for n in targets}
                for _ in range(a.rounds):
                    for name, (port, _) in targets.items():
                        rps, lat = asyncio.run(load(port, conns, a.seconds / a.rounds))
                        rates[name].append(rps)
                        lats[name] += lat
                for name in targets:
                    r = results.setdefault(name, {})
                    r[f"rps@{conns}"] = statistics.mean(rates[name])
                    r[f"p50@{conns}"] = pct(lats[name], 0.50)
                    r[f"p99@{conns}"] = pct(lats[name], 0.99)
            for name, (port, _) in targets.items():
                t = asyncio.run(ttfe(port, 200))
                results[name]["ttfe_p50"] = statistics.median(t) * 1000
                results[name]["ttfe_p99"] = pct(t, 0.99)
                results[name]["rss"] = peak_rss_mb(targets[name][1].pid)
        finally:
            for _, proc in targets.values():
                proc.terminate()
                proc.wait(10)
    names = list(results)
    base = results[names[0]]
    print(f"# bench/run.py, {a.seconds:g}s per cell in {a.rounds} interleaved rounds, "
          f"{os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}, stand-in upstream on loopback\n")
    print("| metric | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for k, bv in base.items():
        cells = []
        for n in names:
            v = results[n][k]
            if k.startswith("rps"):
                cell = f"{v:.0f}" + ("" if n == names[0] else f" ({v / bv:.0%})")
            elif k == "rss":
                cell = f"{v:.1f} MB"
            else:
                cell = f"{v:.2f} ms" + ("" if n == names[0] else f" ({v - bv:+.2f})")
            cells.append(cell)
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
