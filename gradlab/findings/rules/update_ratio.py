"""Updates too large for their weights: ||w_t − w_prev|| / ||w|| per step (the update norm
over the steps between two records, divided by their number) above a band. CS231n's rule
of thumb puts healthy updates near 1e-3 of the weights; ten percent of a weight per step is
a net moving faster than it can settle (SageMaker Debugger's weight_update_ratio rule); a
whole weight's worth per step is a net that no longer settles at all."""

from __future__ import annotations

import numpy as np

from gradlab import stat_names as S
from gradlab.findings.finding import ERROR, WARNING, Finding, layers
from gradlab.findings.rule import Rule
from gradlab.findings.thresholds import Threshold
from gradlab.findings.view import steps_between

CS231N = ("CS231n (Karpathy): near 1e-3 is healthy in mid-training; gradlab's calibration: healthy zoo nets reach "
          "0.19 per step in their first steps on digits (reports/families-digits, 2026-12-06), a learning rate far "
          "too high 125-1e4")  # fmt: skip
THRESHOLDS = {
    "warning": Threshold(1.0, "update/weight per step that is a warning (the weight replaced each step)", CS231N),
    "error": Threshold(10.0, "update/weight per step that is an error", CS231N),
}


GROWING = 0.1  # a zero-initialized weight below this fraction of its largest norm is still growing from zero


def ratios(view):
    """Per-step update/weight ratio, step × weight (matrices only: biases, gains and gates
    may start at or near zero)."""
    update, weight = view.table(S.UPDATE_NORM), view.table(S.WEIGHT_NORM)
    if update.empty or weight.empty:
        return update
    cols = view.matrices([c for c in update.columns if c in weight.columns])
    update = update[cols].reindex(weight.index)
    gap = steps_between(weight)
    previous = weight[cols].shift(1).to_numpy()  # the update is measured from the previous record's weights
    largest = weight[cols].max().to_numpy()
    from_zero = weight[cols].iloc[0].to_numpy() <= 1e-6 * largest  # zero-initialized (Fixup): no ratio while it grows
    previous = np.where((previous > 0) & ~(from_zero & (previous < GROWING * largest)), previous, np.nan)
    return (update / previous / gap).replace([np.inf, -np.inf], np.nan)


def check(view, th):
    r = ratios(view)
    if r.empty:
        return []
    over = r >= th["warning"]
    cols = [c for c in r.columns if over[c].any()]
    if not cols:
        return []
    steps = over[cols].any(axis=1)
    first, last = int(steps.idxmax()), int(steps[steps].index[-1])
    worst = r[cols].max().sort_values(ascending=False)
    return [Finding(
        RULE.name, ERROR if worst.iloc[0] >= th["error"] else WARNING, view.key,
        f"updates of {worst.iloc[0]:.3g}x the weights per step in {layers(len(cols))} from step {first:,}",
        f"||Δw||/||w|| per step: {', '.join(f'{k} {v:.3g}' for k, v in worst.head(3).items())} (line: "
        f"{th['warning']:g} a warning, {th['error']:g} an error; healthy near 1e-3, up to 0.2 in the first steps)",
        "each step changes these weights by a large part of their size: the net moves faster than it settles, "
        "often before its loss diverges",
        "lower the learning rate (or warm it up), clip gradients, or add weight normalization",
        where=view.places(worst.index[:4]), first_step=first, last_step=last, figure="gradient_heatmap",
    )]  # fmt: skip


RULE = Rule("update_ratio", "updates too large for their weights", (S.UPDATE_NORM, S.WEIGHT_NORM), THRESHOLDS,
            check)  # fmt: skip
