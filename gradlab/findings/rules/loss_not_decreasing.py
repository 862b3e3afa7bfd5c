"""A loss that does not decrease: the mean of the last tenth of the logged training losses is
not at least ``drop`` below the mean of the first tenth (SageMaker Debugger's
loss_not_decreasing rule names the same failure): a net that barely trains, e.g. Fixup at a
learning rate too low for it, or one whose gradient vanished."""

from __future__ import annotations

import numpy as np

from gradlab.findings.finding import WARNING, Finding
from gradlab.findings.rule import Rule
from gradlab.findings.thresholds import Threshold

FAMILIES = ("gradlab's calibration on reports/families-digits (300 steps): healthy nets fall by 92-98 %, Fixup at "
            "lr 0.03 by 6-11 %, plain-56 by 16 %, plain-110 by 1 % (2026-12-06)")  # fmt: skip
THRESHOLDS = {
    "drop": Threshold(0.25, "the least relative fall of the loss, from its first tenth to its last", FAMILIES),
    "min_steps": Threshold(200, "steps the logged losses must span before the rule speaks",
                           "gradlab: healthy runs of 40-60 steps may still be in their first descent (13-21 % in the "
                           "pathology suite)"),
}


def check(view, th):
    loss = view.loss
    loss = loss[np.isfinite(loss.to_numpy())]
    if view.finite_until is not None:
        loss = loss[loss.index < view.finite_until]
    if len(loss) < 2 or loss.index[-1] - loss.index[0] < th["min_steps"]:
        return []
    tenth = max(1, len(loss) // 10)
    start, end = float(loss.iloc[:tenth].mean()), float(loss.iloc[-tenth:].mean())
    if not start > 0 or end < (1 - th["drop"]) * start:
        return []
    return [Finding(
        RULE.name, WARNING, view.key, f"the loss does not decrease: {start:.4g} at the start, {end:.4g} at the end",
        f"mean loss of the first {tenth} logged steps {start:.4g}, of the last {tenth} {end:.4g}: a fall of "
        f"{1 - end / start:.0%} (line: {th['drop']:.0%})",
        "the net barely trains at this budget",
        "try a larger learning rate (or a warm-up), check that the optimizer holds the parameters, and look at "
        "the gradient findings of this run",
        first_step=int(loss.index[0]), last_step=int(loss.index[-1]), figure="curves",
    )]  # fmt: skip


RULE = Rule("loss_not_decreasing", "a training loss that does not decrease", ("loss",), THRESHOLDS, check)
