"""Layers that do not learn: weights that receive a gradient but are not moved by it. Their
step size (||Δw|| per step over ||dL/dW||, the learning rate SGD applies to them) stays below
``relative`` times the median of the other weight matrices' at every recorded step after the
first, or is exactly 0: a frozen layer, one left out of the optimizer, a parameter group
starved by its schedule. A layer whose gradient is tiny moves little with a healthy step
size: that is vanishing_gradients' to say, not this rule's."""

from __future__ import annotations

import numpy as np

from gradlab import stat_names as S
from gradlab.findings.finding import WARNING, Finding, layers
from gradlab.findings.rule import Rule
from gradlab.findings.thresholds import Threshold
from gradlab.findings.view import steps_between

THRESHOLDS = {"relative": Threshold(
    1e-3, "step size (update per gradient) below this fraction of the other layers' median",
    "gradlab: a thousandth of the others' step is frozen for any practical purpose; SGD and momentum give "
    "every layer the same step size, Adam's differ by far less than 1e3 on healthy runs (pathology suite)")}


def step_sizes(view):
    """||Δw|| per step over ||dL/dW||, step × weight matrix (the first record has none)."""
    update, grad = view.table(S.UPDATE_NORM), view.table(S.GRAD_NORM)
    cols = view.matrices([c for c in update.columns if c in grad.columns])
    if not cols:
        return update.iloc[0:0]
    grad = grad[cols]
    update = update[cols].reindex(grad.index)
    gap = steps_between(grad)
    sizes = update / gap / grad.shift(1).where(grad.shift(1) > 0)  # the update follows the previous gradient
    return sizes.iloc[1:].replace([np.inf, -np.inf], np.nan)


def check(view, th):
    sizes = step_sizes(view).dropna(how="all")
    if sizes.empty or sizes.shape[1] < 2:
        return []
    grad, weight = view.table(S.GRAD_NORM), view.table(S.WEIGHT_NORM)
    still = []
    for col in _candidates(sizes, th["relative"]):
        mine = sizes[col]
        others = sizes.drop(columns=col).median(axis=1)
        moved = (mine > th["relative"] * others) | ((mine > 0) & (others == 0))
        if mine.notna().any() and not moved[mine.notna()].any() and not _rounds_away(col, others, grad, weight):
            still.append(col)
    if not still:
        return []
    first, last = int(sizes.index[0]), int(sizes.index[-1])
    return [Finding(
        RULE.name, WARNING, view.key, f"{layers(len(still))} do not learn: their weights do not move",
        f"step size (||Δw|| per step / ||dL/dW||) below {th['relative']:g} of the other layers' median at every "
        f"recorded step from {first:,} to {last:,}, though the gradient is not zero",
        "these weights receive a gradient but are not updated: frozen, left out of the optimizer, or at a learning "
        "rate the schedule has brought to ~0",
        "check requires_grad and the optimizer's parameter groups, and the learning rate schedule",
        where=view.places(still), first_step=first, last_step=last, figure="gradient_heatmap",
    )]  # fmt: skip


def _candidates(sizes, relative: float) -> list:
    """The layers that may not move: those never above ``relative`` times an upper bound of
    the other layers' median at any step. Removing one of k sorted values leaves a median of
    at most the value at rank k // 2 + 1, so a layer above that bound moved at that step;
    the rest go to the exact test (one median per layer, over the others). A step with one
    value has no others: it excludes nobody."""
    values = sizes.to_numpy(np.float64)
    ordered = np.sort(values, axis=1)  # NaNs last
    k = np.isfinite(values).sum(axis=1)
    rank = np.clip(k // 2 + 1, 0, np.maximum(k - 1, 0))
    upper = np.where(k > 1, ordered[np.arange(len(values)), rank], np.inf)  # (one value: no others to compare)
    above = values > relative * upper[:, None]  # (NaN compares False)
    return [col for col, moved in zip(sizes.columns, above.any(axis=0)) if not moved]


def _rounds_away(col, others, grad, weight) -> bool:
    """Whether the update the others' step size would give this layer is below float32's
    resolution of its weights (~1e-7 relative) at every step: its gradient vanished, and the
    update rounds away; vanishing_gradients says so."""
    if col not in weight:
        return False
    expected = others * grad[col].shift(1).reindex(others.index)
    return bool((expected < FLOAT32_RESOLUTION * weight[col].reindex(others.index)).all())


FLOAT32_RESOLUTION = 1e-6  # relative: float32's 1.2e-7 with a margin for norms against elements
RULE = Rule("not_learning", "layers whose weights do not move though they get a gradient",
            (S.UPDATE_NORM, S.GRAD_NORM, S.WEIGHT_NORM), THRESHOLDS, check)  # fmt: skip
