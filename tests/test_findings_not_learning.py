"""not_learning's quick pass (rules/not_learning._candidates) never leaves out a layer the
exact test would call still: checked against the median of the others, layer by layer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab.findings.rules.not_learning import _candidates


def _still(sizes: pd.DataFrame, relative: float) -> set:
    out = set()
    for col in sizes.columns:
        mine, others = sizes[col], sizes.drop(columns=col).median(axis=1)
        moved = (mine > relative * others) | ((mine > 0) & (others == 0))
        if not moved[mine.notna()].any():
            out.add(col)
    return out


def test_the_quick_pass_keeps_every_layer_the_exact_test_calls_still():
    rng = np.random.default_rng(0)
    left_out = 0
    for trial in range(300):
        n, steps = int(rng.integers(2, 9)), int(rng.integers(1, 6))
        values = rng.lognormal(0, 2, (steps, n))
        values[:, rng.integers(0, n)] *= rng.choice([1e-6, 1e-3, 0.0, 1.0])  # a still layer, often
        values[rng.random((steps, n)) < 0.15] = np.nan
        sizes = pd.DataFrame(values, columns=[f"l{i}" for i in range(n)])
        for relative in (1e-3, 0.5):
            kept = set(_candidates(sizes, relative))
            assert _still(sizes, relative) <= kept, (trial, relative)
            left_out += n - len(kept)
    assert left_out > 300  # (and it does leave layers out)
