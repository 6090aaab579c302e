"""Bare mitmdump vs hydraguard in one run, same stand-in upstream.

    .venv/bin/python bench/run.py [--seconds 6] [--rounds 3] [--rules rules/default.yaml]
        [--cells uniform,realistic,long,ttfe] [--no-lean] [--stream-events 2000]

Cells, each measured in interleaved rounds (every target once per round, so slow drifts of the
shared machine hit them alike):
- uniform: one short Anthropic request over and over at 1, 8 and 32 connections;
- realistic: bench/realistic.py's mix (6,000 accounts and client IPs in X-Forwarded-For from
  the trusted 127.0.0.1, 3-10 KB templated prompts, both providers, a quarter streamed) at 8
  connections; every target gets the same requests in the same order;
- long: one connection streaming Anthropic replies of 2,000 text deltas, seconds per stream;
- ttfe: SSE time to first event.
Prints a markdown table: the median over rounds of requests/s (or seconds per stream) and, in
brackets, the median over rounds of the ratio to bare mitmdump measured in the same round;
latency percentiles over all rounds; peak RSS of each proxy.
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
sys.path.insert(0, str(ROOT / "bench"))

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


class Payloads:
    """The requests one target is sent, in order, continuing where the last round stopped."""

    def __init__(self, items: list[bytes]) -> None:
        self.items, self.pos = items, 0

    def next(self) -> bytes:
        item = self.items[self.pos % len(self.items)]
        self.pos += 1
        return item


async def load(port: int, conns: int, seconds: float, payloads: Payloads | None = None
               ) -> tuple[float, list[float]]:
    payloads = payloads or Payloads([request_bytes(port)])
    lat: list[float] = []
    errors: dict[int, int] = {}
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                writer.write(payloads.next())
                status = await read_whole(reader)
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


async def read_whole(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response as cheaply as possible (big reads, not chunk by chunk: a
    streaming proxy sends one HTTP chunk per event, a buffering one a single body, and the
    client's own cost per chunk must not count); returns the status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lower = head.lower()
    if b"\r\ncontent-length:" in lower:
        n = int(lower.split(b"\r\ncontent-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(n)
        return status
    tail = b""
    while not tail.endswith(b"\r\n0\r\n\r\n"):  # SSE text never holds this sequence
        data = await reader.read(1 << 16)
        if not data:
            raise ConnectionError("stream cut")
        tail = (tail + data)[-16:]
    return status


async def streams(port: int, payload: bytes, n: int) -> list[float]:
    """Seconds per whole streamed reply, `n` in a row on one connection."""
    out = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(n):
        t0 = time.perf_counter()
        writer.write(payload)
        assert await read_whole(reader) == 200
        out.append(time.perf_counter() - t0)
    writer.close()
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def rounds(targets: dict, n: int, measure) -> dict[str, list]:
    """`measure(name, port)` for every target, `n` interleaved rounds; values per target."""
    out: dict[str, list] = {name: [] for name in targets}
    for _ in range(n):
        for name, (port, _) in targets.items():
            out[name].append(measure(name, port))
    return out


def summarise(results: dict, key: str, per_round: dict[str, list[float]]) -> None:
    """Median over rounds, and the median of the per-round ratios to the first target."""
    base = per_round[next(iter(per_round))]
    for name, xs in per_round.items():
        ratios = [x / b for x, b in zip(xs, base, strict=True)]
        results.setdefault(name, {})[key] = (statistics.median(xs), statistics.median(ratios))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0, help="per cell and target")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    ap.add_argument("--rules", action="append",
                    help="rules file(s) to bench, one hydraguard column each (default: "
                    "rules/default.yaml and bench/rules-spine.yaml)")
    ap.add_argument("--cells", default="uniform,realistic,long,ttfe")
    ap.add_argument("--no-lean", action="store_true", help="skip the lean mitmdump column")
    ap.add_argument("--no-streaming", action="store_true",
                    help="skip the streaming mitmdump column (bench/stream_passthrough.py)")
    ap.add_argument("--stream-events", type=int, default=2000, help="long-stream cell")
    a = ap.parse_args()
    cells = set(a.cells.split(","))
    a.rules = a.rules or [str(ROOT / "rules" / "default.yaml"),
                          str(ROOT / "bench" / "rules-spine.yaml")]
    mitmdump = str(Path(sys.executable).parent / "mitmdump")
    results: dict[str, dict[str, tuple[float, float] | float]] = {}
    realistic_items: list[bytes] = []
    if "realistic" in cells:
        from realistic import realistic_requests

        realistic_items = realistic_requests()
    with upstream() as up, tempfile.TemporaryDirectory() as d:
        bare_port = free_port()
        common = ["--listen-host", "127.0.0.1", "--set", "flow_detail=0",
                  "--set", "termlog_verbosity=warn", "--set", "connection_strategy=lazy"]
        targets = {"bare mitmdump": (bare_port, start(
            [mitmdump, "--mode", f"reverse:{up.url}", "--listen-port", str(bare_port),
             *common], bare_port))}
        if not a.no_lean:
            # mitmdump minus the addons `hydraguard run` drops (hydraguard/runner.py), without
            # hydraguard: shows the addon's own cost apart from the leaner mitmproxy
            lean_port = free_port()
            targets["lean mitmdump"] = (lean_port, start(
                [sys.executable, "-m", "hydraguard.runner", "--mode", f"reverse:{up.url}",
                 "--listen-port", str(lean_port), *common], lean_port))
        if not a.no_streaming:
            port = free_port()
            targets["streaming mitmdump"] = (port, start(
                [mitmdump, "--mode", f"reverse:{up.url}", "--listen-port", str(port),
                 "-s", str(ROOT / "bench" / "stream_passthrough.py"), *common], port))
        for rules in a.rules:
            port = free_port()
            name = f"hydraguard {Path(rules).name}"
            targets[name] = (port, start(
                [sys.executable, "-m", "hydraguard", "run", "--upstream", up.url,
                 "--listen", f"127.0.0.1:{port}", "--rules", rules,
                 "--log", f"{d}/{len(targets)}.jsonl",
                 "--status", f"{d}/{len(targets)}.status.json"], port))
        try:
            run_cells(a, cells, targets, results, realistic_items)
            for name, (_, proc) in targets.items():
                results[name]["rss"] = peak_rss_mb(proc.pid)
        finally:
            for _, proc in targets.values():
                proc.terminate()
                proc.wait(10)
    report(a, results)


def run_cells(a, cells: set[str], targets: dict, results: dict,
              realistic_items: list[bytes]) -> None:
    for port, _ in targets.values():
        asyncio.run(load(port, 8, 1.0))  # warm-up
    secs = a.seconds / a.rounds
    lats: dict[str, list[float]] = {}

    cpu: dict[str, list[float]] = {}

    def measure(conns: int, feeds: dict[str, Payloads] | None = None):
        def go(name: str, port: int) -> float:
            pid = targets[name][1].pid
            c0 = cpu_seconds(pid)
            rps, lat = asyncio.run(load(port, conns, secs, feeds[name] if feeds else None))
            cpu.setdefault(name, []).append((cpu_seconds(pid) - c0) / max(1, len(lat)) * 1000)
            lats.setdefault(name, []).extend(lat)
            return rps
        return go

    def latencies(key: str) -> None:
        for name, lat in lats.items():
            results[name][f"p50{key}"] = pct(lat, 0.50)
            results[name][f"p99{key}"] = pct(lat, 0.99)
        lats.clear()
        summarise(results, f"proxy CPU ms/request{key}", dict(cpu))
        cpu.clear()

    if "uniform" in cells:
        for conns in (1, 8, 32):
            summarise(results, f"rps@{conns}", rounds(targets, a.rounds, measure(conns)))
            latencies(f"@{conns}")
    if "realistic" in cells:
        feeds = {name: Payloads(realistic_items) for name in targets}
        for name, (port, _) in targets.items():  # warm-up: the first accounts and templates
            asyncio.run(load(port, 8, 1.0, feeds[name]))
        summarise(results, "realistic rps@8",
                  rounds(targets, a.rounds, measure(8, feeds)))
        latencies(" realistic@8")
    if "long" in cells:
        from realistic import long_stream_request

        payload = long_stream_request(a.stream_events)
        per = rounds(targets, a.rounds, lambda name, port: statistics.median(
            asyncio.run(streams(port, payload, 8))) * 1000)
        summarise(results, f"stream of {a.stream_events} events (ms)", per)
    if "ttfe" in cells:
        for name, (port, _) in targets.items():
            t = asyncio.run(ttfe(port, 200))
            results[name]["SSE first event p50"] = statistics.median(t) * 1000
            results[name]["SSE first event p99"] = pct(t, 0.99)


def report(a, results: dict) -> None:
    names = list(results)
    base = results[names[0]]
    print(f"# bench/run.py, {a.seconds:g}s per cell in {a.rounds} interleaved rounds, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end, "
          f"Python {sys.version.split()[0]}, stand-in upstream on loopback\n")
    print("| metric | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for k, bv in base.items():
        cells = []
        for n in names:
            v = results[n][k]
            if isinstance(v, tuple):
                val, ratio = v
                cell = (f"{val:.0f}" if "rps" in k else f"{val:.2f}" if "CPU" in k
                        else f"{val:.1f}") + (
                    "" if n == names[0] else f" ({ratio:.0%})")
            elif k == "rss":
                cell = f"{v:.1f} MB"
            else:
                cell = f"{v:.2f} ms" + ("" if n == names[0] else f" ({v - bv:+.2f})")
            cells.append(cell)
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
