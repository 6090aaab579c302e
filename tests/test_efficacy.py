"""Efficacy goals on a small seeded world, replayed through a real proxy (bench/efficacy.py).

Skipped unless HYDRAGUARD_EFFICACY=1: the current detection does not meet the goals yet.
The seed (101) is held back from tuning: tune with bench/efficacy.py's seeds 1-3.
HYDRAGUARD_EFFICACY_VARIANTS=base,paraphrased,... widens the test (about 20 s per variant).
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

pytestmark = [
    pytest.mark.efficacy,
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("HYDRAGUARD_EFFICACY") != "1",
                       reason="efficacy goals: set HYDRAGUARD_EFFICACY=1 (not met yet)"),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_hydra_is_clamped_and_lookalikes_are_not(variant: str) -> None:
    row = efficacy.run_one(SEED, variant, "small", [str(efficacy.DEFAULT_RULES)])
    print(efficacy.table([row]))
    print("\n".join(row.notes + row.detail))
    assert row.errors == 0, row.notes
    failures = []
    if row.share > efficacy.GOAL_SHARE:
        failures.append(f"hydra share {row.share:.1%} > {efficacy.GOAL_SHARE:.0%}")
    if row.from90 is None or row.from90 > efficacy.GOAL_FROM90:
        failures.append(f">90 % of the hydra refused only from "
                        f"{'never' if row.from90 is None else f'#{row.from90}'} "
                        f"(goal <= #{efficacy.GOAL_FROM90})")
    failures += [f"false positives {pop}: {fp:.2%} > {efficacy.GOAL_FP:.1%}"
                 for pop, fp in row.fp.items() if fp > efficacy.GOAL_FP]
    if row.refused_rate is not None and row.refused_rate < 1.0:
        failures.append(f"refused countries: only {row.refused_rate:.1%} refused")
    assert not failures, "; ".join(failures)
