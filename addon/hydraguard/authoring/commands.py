"""The rule authors' commands: `hydraguard check | explain | test | replay` (cli.py builds
the argument parser and dispatches here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..policy import PolicyError, load_policy


def cmd_check(a: argparse.Namespace) -> int:
    """Validate rules (files or folders, with includes); one summary line per path."""
    from .summary import check_paths

    bad = 0
    for res in check_paths(a.paths):
        for line in res.lines:
            print(line)
        bad += not res.ok or (a.strict and res.warnings > 0)
    return 1 if bad else 0


def _load_or_report(paths: list[str]) -> object:
    try:
        return load_policy(paths)
    except PolicyError as e:
        print(e, file=sys.stderr)
        print(f"hydraguard: {len(e.issues)} error(s) in the rules", file=sys.stderr)
        return None


def _request_spec(a: argparse.Namespace) -> object:
    import json

    from .evaluate import RequestSpec

    m: dict = {}
    if a.facts_json:
        m = json.loads(Path(a.facts_json).read_text(encoding="utf-8"))
        if not isinstance(m, dict):
            raise ValueError("--facts-json: expected a JSON object")
    for name in ("ip", "method", "path", "key", "model", "prompt", "max_tokens"):
        v = getattr(a, name)
        if v is not None:
            m[name] = v
    if a.stream:
        m["stream"] = True
    headers = dict(m.get("headers") or {})
    for h in a.header or ():
        k, sep, v = h.partition(":")
        if not sep:
            raise ValueError(f"--header wants 'name: value', got {h!r}")
        headers[k.strip().lower()] = v.strip()
    if headers:
        m["headers"] = headers
    if a.body_file:
        m["body"] = Path(a.body_file).read_bytes()
    signals = dict(m.get("signals") or {})
    for sv in a.signal or ():
        k, _, v = sv.partition("=")
        try:
            signals[k] = json.loads(v) if v else True
        except ValueError:
            signals[k] = v
    if signals:
        m["signals"] = signals
    return RequestSpec.from_mapping(m)


def cmd_explain(a: argparse.Namespace) -> int:
    """Decide one request offline and show every step."""
    import asyncio
    import json

    from ..cli import DEFAULT_RULES
    from . import explain
    from .evaluate import Evaluator

    policy = _load_or_report(a.rules or [str(DEFAULT_RULES)])
    if policy is None:
        return 2
    try:
        spec = _request_spec(a)
    except (ValueError, OSError) as e:
        print(f"hydraguard explain: {e}", file=sys.stderr)
        return 2

    async def go() -> tuple:
        ev = Evaluator(policy, budgets="peek")
        try:
            return await ev.evaluate(spec), ev.notes
        finally:
            await ev.aclose()

    try:
        ev, notes = asyncio.run(go())
    except Exception as e:  # GeoIP databases that do not open, ...
        print(f"hydraguard explain: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(explain.as_json(ev, notes), indent=2, default=str))
    else:
        print(explain.render(ev, notes))
    return 0


def cmd_test(a: argparse.Namespace) -> int:
    """Run policy tests."""
    from .policytest import render, run_paths

    results, problems = run_paths(a.paths, a.rules)
    for p in problems:
        print(p)
    if results:
        print(render(results))
    if any(r.errors for r in results) or (problems and not results):
        return 2 if not any(r.failed for r in results) else 1
    if problems:
        return 2
    return 1 if any(r.failed for r in results) else 0


def cmd_replay(a: argparse.Namespace) -> int:
    """Re-decide a decision log under new rules."""
    import json

    from .replay import as_json, render, replay

    policy = _load_or_report(a.rules)
    if policy is None:
        return 2
    try:
        fh = sys.stdin if a.log == "-" else open(a.log, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as e:
        print(f"hydraguard replay: {e}", file=sys.stderr)
        return 2
    sim = None
    if a.budgets:
        from .replay_budgets import BudgetReplay, render_clusters

        sim = BudgetReplay(policy)
    try:
        with fh:
            rep = replay(fh, policy, examples=a.examples, relookup_geo=a.relookup_geo,
                         budgets=sim)
        if a.json:
            out = as_json(rep)
            if sim is not None:
                out["clusters"] = [
                    {"cluster": k, "accounts": len(r.accounts), "requests": r.requests,
                     "refused_before": r.refused_before, "refused_after": r.refused_after,
                     "tokens_before": r.tokens_before, "tokens_after": r.tokens_after,
                     "old_clusters": len(r.old_clusters)} for k, r in sim.top(a.top)]
                out["budget_refusals"] = dict(sim.by_budget)
            print(json.dumps(out, indent=2))
        else:
            print(render(rep, a.log, ", ".join(a.rules)))
            if sim is not None:
                print("\n".join(render_clusters(sim.top(a.top), sim.by_budget)))
    finally:
        if sim is not None:
            sim.close()
    return 0
