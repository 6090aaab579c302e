"""Metering cost of long streams: µs per SSE event through `StreamMeter.feed`, one event per
chunk (as the stand-in upstream and the providers send them), for each API; best of 5.

Run: .venv/bin/python bench/bench_sse.py [--events 2000]
"""

from __future__ import annotations

import argparse
import os
import time

from hydraguard.apis import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES, make_stream_meter
from hydraguard_dev.upstream import anthropic_events, chat_events, responses_events


def per_event(api: str, events: list[bytes], hide: bool = False) -> float:
    best = float("inf")
    for _ in range(5):
        m = make_stream_meter(api, hide)
        feed = m.feed
        t0 = time.thread_time_ns()
        for e in events:
            feed(e)
        feed(b"")
        best = min(best, (time.thread_time_ns() - t0) / len(events) / 1000)
        assert m.usage_reported
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    n = ap.parse_args().events
    rows = [
        ("Anthropic Messages", ANTHROPIC_MESSAGES, anthropic_events("m", 100, n), False),
        ("OpenAI Chat (include_usage)", OPENAI_CHAT, chat_events("m", 100, n, True), False),
        ("OpenAI Chat, usage chunk hidden", OPENAI_CHAT, chat_events("m", 100, n, True), True),
        ("OpenAI Responses", OPENAI_RESPONSES, responses_events("m", 100, n), False),
    ]
    print(f"StreamMeter.feed, {n:,} text deltas, one event per chunk; thread CPU, best of 5; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, api, events, hide in rows:
        print(f"  {name:<34} {per_event(api, events, hide):6.2f} µs/event")


if __name__ == "__main__":
    main()
