"""Layers that do not learn: weights whose update per step stays below ``ratio`` of their
size at every recorded step after the first (exactly 0 for a frozen layer; a learning rate
the schedule has starved), while the gradient reaching them is not zero (a blocked path is
zero_gradients' to say)."""

from __future__ import annotations

from gradlab import stat_names as S
from gradlab.findings.finding import WARNING, Finding, layers
from gradlab.findings.rule import Rule
from gradlab.findings.rules.update_ratio import ratios
from gradlab.findings.thresholds import Threshold

THRESHOLDS = {"ratio": Threshold(
    1e-7, "update/weight per step below which a layer does not learn",
    "CS231n's ~1e-3 healthy ratio, four orders of magnitude down: float32 rounding of a weight is ~1e-7")}


def check(view, th):
    r = ratios(view).iloc[1:]  # the first record has no update
    if r.dropna(how="all").empty:
        return []
    grads = view.table(S.GRAD_NORM)
    still = [c for c in r.columns if r[c].notna().any() and (r[c].dropna() < th["ratio"]).all()
             and c in grads and (grads[c] > 0).any()]  # fmt: skip
    if not still:
        return []
    first, last = int(r.index[0]), int(r.index[-1])
    return [Finding(
        RULE.name, WARNING, view.key, f"{layers(len(still))} do not learn: their weights do not move",
        f"||Δw||/||w|| per step below {th['ratio']:g} at every recorded step from {first:,} to {last:,}, though "
        f"their gradient is not zero",
        "these weights receive a gradient but are not updated: frozen, left out of the optimizer, or at a learning "
        "rate the schedule has brought to ~0",
        "check requires_grad and the optimizer's parameter groups, and the learning rate schedule",
        where=view.places(still), first_step=first, last_step=last, figure="gradient_heatmap",
    )]  # fmt: skip


RULE = Rule("not_learning", "layers whose weights do not move though they get a gradient",
            (S.UPDATE_NORM, S.WEIGHT_NORM, S.GRAD_NORM), THRESHOLDS, check)  # fmt: skip
