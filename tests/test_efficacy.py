"""Efficacy goals on a small seeded world, replayed through a real proxy (bench/efficacy.py),
with the shipped rules: the hydra's share <= 5 %, > 90 % of its requests refused from request
#50 on, no more than 0.1 % false positives in any legitimate population, every caller from a
refused country refused. About 15 s.

Seed 101, variant base. HYDRAGUARD_EFFICACY_VARIANTS=base,slower,... widens the test (about
15-25 s per variant); bench/efficacy.py measures every variant and seed.

Machine load: the replay is time-compressed (about 34x), so a loaded machine sends requests
late and in bunches (the row's `lag p99`, in simulated seconds). When a run misses a goal
while the replay lagged more than LAG_RETRY simulated seconds, it is replayed once at half
the rate (half the compression, so half the bunching) and that run decides; both are printed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import efficacy

SEED = 101
VARIANTS = os.environ.get("HYDRAGUARD_EFFICACY_VARIANTS", "base").split(",")
LAG_RETRY = 30.0  # simulated seconds of replay lag (p99) above which a miss is replayed

pytestmark = [pytest.mark.efficacy, pytest.mark.e2e]


def misses(row: efficacy.Row) -> list[str]:
    """The goals the run missed (empty: every goal met)."""
    out = [f"{row.errors} requests got no response"] if row.errors else []
    if row.share > efficacy.GOAL_SHARE:
        out.append(f"hydra share {row.share:.1%} > {efficacy.GOAL_SHARE:.0%}")
    if row.from90 is None or row.from90 > efficacy.GOAL_FROM90:
        out.append(f">90 % of the hydra refused only from "
                   f"{'never' if row.from90 is None else f'#{row.from90}'} "
                   f"(goal <= #{efficacy.GOAL_FROM90})")
    out += [f"false positives {pop}: {fp:.2%} > {efficacy.GOAL_FP:.1%}"
            for pop, fp in row.fp.items() if fp > efficacy.GOAL_FP]
    if row.refused_rate is None or row.refused_rate < 1.0:
        out.append(f"refused countries: {row.refused_rate} refused, not 100 %")
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_hydra_is_clamped_and_lookalikes_are_not(variant: str) -> None:
    rules = [str(efficacy.DEFAULT_RULES)]
    row = efficacy.run_one(SEED, variant, "small", rules)
    rows = [row]
    if misses(row) and row.lag_p99 > LAG_RETRY:
        row = efficacy.run_one(SEED, variant, "small", rules, rate=efficacy.RATE / 2)
        rows.append(row)
    print(efficacy.table(rows))
    print("\n".join(row.notes + row.detail))
    assert misses(row) == []
