"""Replaying a world through a real proxy for the efficacy benchmark (bench/efficacy.py).

- the runtime hooks: the stand-in upstream and the `hydraguard run` process helper are reached
  through `stub_module()` and `proxy_process()` only (one place to repoint when they move);
- `derive_rules`: the rules under test rewritten for the world (its GeoIP databases, trusted
  proxy 127.0.0.1, its hosting ASNs) and for the replay's time compression (every duration in
  the rules divided by the same factor, so the proxy sees the world's timing);
- `replay`: send every request at its scheduled time from a pool of HTTP client threads, with
  the true client address in X-Forwarded-For; returns each response's status and served tokens.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import http.client
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from efficacy_world import BATCH_PATH, Request, World

ROOT = Path(__file__).resolve().parents[1]
SECRET = "efficacy-bench-secret"
GEO_FILES = {"location": "demo-city.mmdb", "asn": "demo-asn.mmdb",
             "anonymous": "demo-anonymous-ip.mmdb"}  # geoip/build.py's names for the layouts


# --------------------------------------------------------------------------- runtime hooks


def stub_module() -> ModuleType:
    """The stand-in upstream module (start_stub, input_tokens_for, output_tokens_for)."""
    import hydraguard_dev.upstream as stub

    return stub


@contextlib.contextmanager
def proxy_process(upstream: str, rules: str, log_path: Path
                  ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real `hydraguard run` on a free port; yields (process, base URL) once healthy."""
    from hydraguard_dev.procs import proxy

    with proxy(upstream, rules, env={"HYDRAGUARD_ACCOUNT_SECRET": SECRET},
               workdir=log_path.parent) as p:
        assert p.log_path == log_path, (p.log_path, log_path)  # <workdir>/decisions.jsonl
        yield p.proc, p.url


def geoip_build() -> ModuleType:
    """geoip/build.py (a script, not a package module) loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hydraguard_geoip_build",
                                                  ROOT / "geoip" / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def account_of(key: str) -> str:
    """The account id the proxy logs for an API key (`hydraguard hash-key`: HMAC-SHA256)."""
    return "acct_" + hmac.new(SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()[:20]


def expected_tokens(r: Request) -> int:
    """Input + output tokens the stand-in upstream serves for `r` when it is let through (a
    Message Batch: for every request in it)."""
    stub = stub_module()
    body = json.loads(r.body)
    out = dict(r.headers).get("x-stub-output-tokens")
    bodies = [x["params"] for x in body["requests"]] if r.path == BATCH_PATH else [body]
    return sum(int(stub.input_tokens_for(b)) + int(stub.output_tokens_for(b, out)[0])
               for b in bodies)


def write_geoip(world: World, out_dir: Path) -> dict[str, str]:
    """Build the world's City, ASN and Anonymous-IP databases; role -> path."""
    build, src = geoip_build(), world.geoip_source()
    return {role: str(build.build_one(src, name, out_dir)) for role, name in GEO_FILES.items()}


# --------------------------------------------------------------------------- rules for the world

PER = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
# (path to a mapping, key, default): every duration in seconds the rules can hold. A new
# duration setting in the rules language must be added here, or a compressed replay is unfair.
DURATIONS: tuple[tuple[tuple[str, ...], str, float], ...] = (
    (("clusters", "*", "link"), "window", 3600),
    (("indicators", "tls"), "window", 3600),
    (("indicators", "behaviour"), "window", 3600),
    (("indicators", "behaviour"), "rate_window", 60),
    (("indicators", "prompts", "templates"), "window", 3600),
    (("budgets", "*", "probation"), "min_age", 86400),
)


def rules_files(paths: list[str]) -> list[Path]:
    """The files the proxy loads for `paths`, in load order (folders and `include:` expanded)."""
    out: list[Path] = []

    def add(p: Path) -> None:
        if p.is_dir():
            for f in sorted([*p.glob("*.yaml"), *p.glob("*.yml")], key=lambda x: x.name):
                add(f)
            return
        out.append(p.resolve())
        doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        for inc in doc.get("include") or ():
            add(p.parent / inc)

    for p in paths:
        add(Path(p))
    return out


def _mappings(doc: Any, path: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The mappings at `path` in `doc` ("*": every item of a list); a null one becomes {}."""
    if not path:
        if isinstance(doc, dict):
            yield doc
        return
    head, rest = path[0], path[1:]
    if head == "*":
        for item in doc if isinstance(doc, list) else ():
            yield from _mappings(item, rest)
    elif isinstance(doc, dict) and head in doc:
        if doc[head] is None and not rest:
            doc[head] = {}
        yield from _mappings(doc[head], rest)


def _windows(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for budget in doc.get("budgets") or ():
        yield from budget.get("windows") or ()


def window_seconds(w: dict[str, Any]) -> float:
    return float(w["seconds"]) if w.get("seconds") is not None else float(PER[w["per"]])


def durations(docs: list[dict[str, Any]]) -> list[float]:
    """Every duration (seconds) in the rules documents, defaults included."""
    out = [window_seconds(w) for d in docs for w in _windows(d)]
    for d in docs:
        for path, key, default in DURATIONS:
            out += [float(m.get(key, default)) for m in _mappings(copy.deepcopy(d), path)]
    return [x for x in out if x > 0]  # 0: "not needed" (probation min_age), nothing to scale


def refused_countries(docs: list[dict[str, Any]]) -> list[str]:
    """Countries an enforcing `deny` region rule refuses."""
    out: list[str] = []
    for d in docs:
        for rule in d.get("rules") or ():
            region = rule.get("region") or {}
            if rule.get("action") == "deny" and not rule.get("shadow"):
                out += [c for c in region.get("deny_countries") or () if c not in out]
    return out


@dataclass
class DerivedRules:
    paths: list[Path]      # the rewritten files, in load order
    scale: float           # simulated seconds per real second


def derive_rules(files: list[Path], world: World, geo: dict[str, str], out_dir: Path,
                 scale: float, peak: Callable[[float], int] | None = None) -> DerivedRules:
    """The rules files rewritten for `world`, every duration divided by `scale` (1: unchanged);
    with `peak` (simulated window seconds -> tokens of the heaviest legitimate key) each budget
    window allows 2 x that peak."""
    docs = [yaml.safe_load(f.read_text(encoding="utf-8")) or {} for f in files]
    if not any("settings" in d for d in docs):
        docs[0]["settings"] = {}
    if not any("geoip" in d for d in docs):
        docs[0]["geoip"] = {}
    for f, d in zip(files, docs, strict=True):
        d.pop("include", None)
        if "settings" in d:
            s = d["settings"] = d["settings"] or {}
            s["trusted_proxies"] = sorted({*(s.get("trusted_proxies") or ()), "127.0.0.1/32"})
        if "geoip" in d:
            g = d["geoip"] = d["geoip"] or {}
            g.update(geo)
        if isinstance(d.get("log"), dict):
            d["log"]["max_bytes"] = 0  # never rotate during a run
        ip = (d.get("indicators") or {}).get("ip")
        if isinstance(ip, dict):
            have = [str(a).upper().removeprefix("AS") for a in ip.get("hosting_asns") or ()]
            ip["hosting_asns"] = [*(ip.get("hosting_asns") or ()),
                                  *(a for a in world.hosting_asns if str(a) not in have)]
            for lst in ip.get("lists") or ():
                lst["path"] = str((f.parent / lst["path"]).resolve())
        for path, key, default in DURATIONS:
            for m in _mappings(d, path):
                v = float(m.get(key, default))
                m[key] = max(1.0, v / scale) if v > 0 else 0.0
        for w in _windows(d):
            sim = window_seconds(w)
            w.setdefault("name", w.get("per") or f"{w['seconds']:g}s")
            w.pop("per", None)
            w["seconds"] = max(1.0, sim / scale)
            if peak is not None:
                w["tokens"] = max(1, math.ceil(2 * peak(sim)))
    out = []
    for i, (f, d) in enumerate(zip(files, docs, strict=True)):
        p = out_dir / f"{i:02d}-{f.name}"
        p.write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
        out.append(p)
    return DerivedRules(out, scale)


# --------------------------------------------------------------------------- replay


@dataclass(slots=True)
class Result:
    status: int          # 0: no response (connection error)
    served: int          # tokens reported in the response's usage (0 unless 200)
    lag: float           # real seconds the request left after its scheduled time


def served_tokens(body: bytes) -> int:
    """Input + output tokens of a JSON reply's or an SSE stream's usage."""
    usage: dict[str, Any] = {}

    def take(obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        for holder in (obj, obj.get("message"), obj.get("response")):
            if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
                usage.update({k: v for k, v in holder["usage"].items() if isinstance(v, int)})

    if body.lstrip().startswith(b"{"):
        take(json.loads(body))
    else:
        for line in body.splitlines():
            if line.startswith(b"data:") and b'"usage"' in line:
                take(json.loads(line[5:]))
    n_in = usage.get("input_tokens", usage.get("prompt_tokens", 0))
    n_out = usage.get("output_tokens", usage.get("completion_tokens", 0))
    return int(n_in) + int(n_out)


def replay(url: str, requests: list[Request], scale: float, workers: int = 24) -> list[Result]:
    """Send `requests` (sorted by time) so that simulated second t leaves at t / scale."""
    host = url.split("://", 1)[1]
    results: list[Result | None] = [None] * len(requests)
    nxt, lock = [0], threading.Lock()
    t0 = time.monotonic() + 0.2

    def work() -> None:
        conn = http.client.HTTPConnection(host, timeout=120)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(requests):
                break
            r = requests[i]
            due = t0 + r.t / scale
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            lag = time.monotonic() - due
            headers = {**dict(r.headers), "x-forwarded-for": r.ip}
            try:
                conn.request("POST", r.path, body=r.body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                served = 0 if resp.status != 200 else (
                    expected_tokens(r) if r.path == BATCH_PATH else served_tokens(data))
                results[i] = Result(resp.status, served, lag)
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conn = http.client.HTTPConnection(host, timeout=120)
                results[i] = Result(0, 0, lag)
        conn.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r if r is not None else Result(0, 0, 0.0) for r in results]


def read_log(path: Path, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The decision log once it holds `n` lines (or what it holds after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return [json.loads(x) for x in lines if x.strip()]
        time.sleep(0.1)


def log_hint(path: Path) -> str:
    err = path.with_suffix(".stderr")
    return err.read_text(errors="replace")[-2000:] if err.exists() else ""


if __name__ == "__main__":
    sys.exit("bench/efficacy_proxy.py is a library; run bench/efficacy.py")
