"""`hydraguard demo`: the stand-in upstream, two real proxies (rules/demo.yaml with and without
its budgets) and a short scripted mix of traffic, all offline. Prints what was allowed, denied
and throttled and why, and the tokens served per cluster with and without the budgets."""

from __future__ import annotations

import contextlib
import http.client
import json
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from .procs import ROOT, Proxy, proxy
from .upstream import start_stub

DEMO_RULES = ROOT / "rules" / "demo.yaml"
ENV = {"HYDRAGUARD_ACCOUNT_SECRET": "hydraguard-demo-secret"}


def _without_budgets(tmp: Path) -> Path:
    """rules/demo.yaml minus `budgets:` (geoip paths made absolute)."""
    data = yaml.safe_load(DEMO_RULES.read_text())
    data.pop("budgets", None)
    for role, p in list(data.get("geoip", {}).items()):
        if isinstance(p, str) and p.endswith(".mmdb"):
            data["geoip"][role] = str((DEMO_RULES.parent / p).resolve())
    out = tmp / "demo-no-budgets.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


# -- the scripted traffic: (group, api key, client ip, prompt, max_tokens, output tokens) -----
def traffic() -> list[tuple[str, str, str, str, int, int]]:
    """Ordinary users, a denied country, a blocked CIDR and a 40-account hydra on 3 exits."""
    reqs = []
    users = [("alice", "192.0.2.3"), ("bob", "192.0.2.4"), ("carol", "192.0.2.17"),
             ("dave", "192.0.2.33"), ("erin", "192.0.2.5")]
    topics = ["a birthday poem", "unit tests for a parser", "the French revolution",
              "sourdough starters", "a cover letter"]
    for rnd in range(3):
        for i, (name, ip) in enumerate(users):
            reqs.append(("ordinary users", f"sk-demo-{name}", ip,
                         f"Please help me with {topics[(i + rnd) % 5]}, round {rnd}.", 400, 180))
    reqs.append(("denied country (CN)", "sk-demo-frank", "192.0.2.50",
                 "hello from a denied country", 200, 100))
    reqs.append(("blocked CIDR", "sk-demo-grace", "203.0.113.10", "hello from a blocked net",
                 200, 100))
    exits = ["198.51.100.70", "198.51.100.71", "198.51.100.72"]
    for rnd in range(3):
        for a in range(40):
            reqs.append(("hydra (40 accts, 3 exits)", f"sk-hydra-{a:03d}", exits[a % 3],
                         f"You are a helpful assistant. Task {rnd * 40 + a}: solve the "
                         "following competition problem step by step and show all reasoning.",
                         1024, 600))
    return reqs


def _send(url: str, reqs: list[tuple[str, str, str, str, int, int]]) -> None:
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=20)
    try:
        for _group, key, ip, prompt, max_tokens, out in reqs:
            body = {"model": "claude-demo", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": prompt}]}
            conn.request("POST", "/v1/messages", body=json.dumps(body).encode(), headers={
                "content-type": "application/json",
                "x-api-key": key, "anthropic-version": "2023-06-01",
                "x-forwarded-for": ip, "x-stub-output-tokens": str(out)})
            conn.getresponse().read()
    finally:
        conn.close()


def _read(p: Proxy, n: int) -> list[dict]:
    """The proxy's decision log once it has ``n`` records, or what it has after 10 s."""
    with contextlib.suppress(TimeoutError):
        return p.wait_lines(n, 10.0)
    return p.lines()


def _served(r: dict) -> int:
    if r.get("status") != 200:
        return 0
    return (r.get("input_tokens") or 0) + (r.get("output_tokens") or 0)


def run_demo() -> int:
    """Run the demo; returns the process exit code."""
    t0 = time.monotonic()
    reqs = traffic()
    group_of_ip = {ip: g for g, _k, ip, *_ in reqs}
    server, port = start_stub()
    upstream = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            with proxy(upstream, DEMO_RULES, env=ENV) as p_with, \
                    proxy(upstream, _without_budgets(tmp), env=ENV) as p_without:
                url_with, url_without = p_with.url, p_without.url
                print(f"hydraguard demo: stand-in upstream {upstream}, proxies {url_with} "
                      f"(rules/demo.yaml) and {url_without} (same rules, no budgets)")
                print(f"sending {len(reqs)} requests to each ...\n")
                ts = [threading.Thread(target=_send, args=(u, reqs))
                      for u in (url_with, url_without)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                with_rows = _read(p_with, len(reqs))
                without_rows = _read(p_without, len(reqs))
    finally:
        server.shutdown()

    # 1. outcomes per caller group
    print("WITH the rules: outcome per caller group")
    print(f"  {'caller group':<27}{'requests':>9}{'allowed':>9}{'denied':>8}{'throttled':>10}"
          "  why (rule: count)")
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in with_rows:
        by_group[group_of_ip.get(r.get("client_ip"), "?")].append(r)
    for g, rows in by_group.items():
        acts = Counter(r["action"] if r["enforced"] else "allow" for r in rows)
        why = Counter(r["rule"] for r in rows if r["enforced"])
        why_s = ", ".join(f"{k}: {v}" for k, v in why.items()) or "-"
        print(f"  {g:<27}{len(rows):>9}{acts['allow']:>9}{acts['deny']:>8}"
              f"{acts['throttle']:>10}  {why_s}")
    thr = next((r for r in with_rows if r["action"] == "throttle"), None)
    if thr is not None:
        print(f"\n  e.g. a throttled request: 429 rate_limit_error, \"{thr['reason']}\"")
    for r in with_rows:
        if r["enforced"] and r["action"] == "deny":
            print(f"  e.g. {r['client_ip']}: {r['status']} ({r['rule']}): {r['reason']}")

    # 2. tokens served per cluster, with and without the budgets
    def per_cluster(rows: list[dict]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for r in rows:
            c = r.get("cluster")
            if c is None:
                continue
            e = out.setdefault(c, {"tokens": 0, "accounts": set(), "groups": Counter()})
            e["tokens"] += _served(r)
            e["accounts"].add(r.get("account"))
            e["groups"][group_of_ip.get(r.get("client_ip"), "?")] += 1
        return out

    w, wo = per_cluster(with_rows), per_cluster(without_rows)
    print("\nTokens served per cluster (input + output), WITH budgets vs WITHOUT")
    print(f"  {'cluster':<32}{'accounts':>9}  {'caller group':<27}{'with':>9}{'without':>10}")
    keys = sorted(set(w) | set(wo), key=lambda c: -max(w.get(c, {}).get("tokens", 0),
                                                       wo.get(c, {}).get("tokens", 0)))
    small = [0, 0, 0]
    shown = 0
    for c in keys:
        e = w.get(c) or wo[c]
        accts = len((w.get(c, {}).get("accounts") or set()) | (wo.get(c, {}).get("accounts")
                                                                 or set()))
        tw, two = w.get(c, {}).get("tokens", 0), wo.get(c, {}).get("tokens", 0)
        if shown >= 8:
            small = [small[0] + 1, small[1] + tw, small[2] + two]
            continue
        shown += 1
        name = c.split(":", 1)[1].replace("cluster=", "")
        print(f"  {name:<32}{accts:>9}  {e['groups'].most_common(1)[0][0]:<27}{tw:>9}{two:>10}")
    if small[0]:
        print(f"  {'(' + str(small[0]) + ' more clusters)':<32}{'':>9}  {'':<27}"
              f"{small[1]:>9}{small[2]:>10}")
    print("  (a hydra account charges its own cluster until what it shares with another account"
          " (a flagged\n   exit, its /24 or ASN, a prompt template) adds up to the link threshold;"
          " from then on\n   the linked accounts share one budget)")
    print("\nTokens served per caller group")
    print(f"  {'caller group':<27}{'with':>9}{'without':>10}")
    for g in by_group:
        tw = sum(_served(r) for r in with_rows if group_of_ip.get(r.get("client_ip")) == g)
        two = sum(_served(r) for r in without_rows
                  if group_of_ip.get(r.get("client_ip")) == g)
        print(f"  {g:<27}{tw:>9}{two:>10}")
    print(f"\ndone in {time.monotonic() - t0:.1f} s")
    return 0
