"""Does a large batch stall other requests? Small /v1/messages calls through a real proxy,
alone and while a 100,000-request Message Batch (and a 100,000-line OpenAI batch file upload)
is parsed and estimated.

    .venv/bin/python bench/bench_batches.py [--requests 100000] [--probe-s 0]

Prints the latency of the small calls (p50 / p99 / max) in each phase and how long the big
request took. The batch body is parsed in a worker thread and the upload on a thread of its
own, so the small calls see the GIL shared, not an event loop blocked for seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addon"))

from hydraguard_dev.procs import proxy, upstream

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
clusters:
  - id: acct
    key: [account]
budgets:
  - id: daily
    windows: [{per: day, tokens: 1000000000000}]
"""
SMALL = {"model": "claude-x", "max_tokens": 8,
         "messages": [{"role": "user", "content": "hello there"}]}


def batch_body(n: int) -> bytes:
    return json.dumps({"requests": [{"custom_id": f"r{i}", "params": {
        "model": "claude-x", "max_tokens": 1024, "messages": [
            {"role": "user", "content": f"Explain item {i} of the list in a few words."}]}}
        for i in range(n)]}).encode()


def file_body(n: int) -> bytes:
    return "\n".join(json.dumps({"custom_id": f"q{i}", "method": "POST",
                                 "url": "/v1/chat/completions", "body": {
                                     "model": "gpt-x", "max_tokens": 256, "messages": [
                                         {"role": "user", "content": f"Summarise item {i}."}]}})
                     for i in range(n)).encode()


def probe(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, headers={"x-api-key": "sk-probe",
                                             "anthropic-version": "2023-06-01"}) as c:
        while not stop.is_set():
            t = time.perf_counter()
            c.post("/v1/messages", json=SMALL).raise_for_status()
            out.append((time.perf_counter() - t) * 1000)


def phase(url: str, big, seconds: float) -> tuple[list[float], float]:
    lat: list[float] = []
    stop = threading.Event()
    th = threading.Thread(target=probe, args=(url, stop, lat))
    th.start()
    t0 = time.perf_counter()
    if big is None:
        time.sleep(seconds)
    else:
        big()
    took = time.perf_counter() - t0
    stop.set()
    th.join()
    return lat, took


def table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def row(name: str, lat: list[float], took: float) -> list[str]:
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    return [name, str(len(lat)), f"{q[49]:.2f}", f"{q[98]:.2f}", f"{max(lat):.2f}",
            f"{took:.1f}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--probe-s", type=float, default=0, help="seconds of the idle phase "
                    "(default: as long as the batch took)")
    a = ap.parse_args()
    body, data = batch_body(a.requests), file_body(a.lines)
    with tempfile.TemporaryDirectory() as d, upstream() as stub:
        rules = Path(d) / "r.yaml"
        rules.write_text(RULES)
        with proxy(stub.url, rules) as gw:
            headers = {"x-api-key": "sk-big", "anthropic-version": "2023-06-01",
                       "content-type": "application/json"}

            def send_batch() -> None:
                r = httpx.post(gw.url + "/v1/messages/batches", content=body,
                               headers=headers, timeout=600)
                assert r.status_code == 200, r.text[:300]

            def send_file() -> None:
                r = httpx.post(gw.url + "/v1/files", files={"file": (
                    "in.jsonl", io.BytesIO(data))}, data={"purpose": "batch"},
                    headers={"authorization": "Bearer sk-big"}, timeout=600)
                assert r.status_code == 200, r.text[:300]

            busy, took = phase(gw.url, send_batch, 0)
            upl, took_u = phase(gw.url, send_file, 0)
            idle, _ = phase(gw.url, None, a.probe_s or took)
            rec = [x for x in gw.lines() if x.get("route") in ("batch", "upload")]
    print(f"batch body {len(body) / 1e6:.1f} MB, {a.requests} requests; upload "
          f"{len(data) / 1e6:.1f} MB, {a.lines} lines")
    print(table(["phase", "small calls", "p50 ms", "p99 ms", "max ms", "phase s"], [
        row("idle", idle, a.probe_s or took),
        row(f"during a {a.requests}-request batch", busy, took),
        row(f"during a {a.lines}-line batch file upload", upl, took_u)]))
    for x in rec:
        print(x["route"], {k: v for k, v in (x.get("batch") or x.get("upload") or {}).items()
                           if k in ("requests", "tokens_reserved", "estimated")},
              f"duration_ms {x['duration_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
