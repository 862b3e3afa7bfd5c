"""Loss spikes, localized: a step whose loss exceeds ``factor`` times its running mean over
the previous ``window`` steps, and the layers whose gradient norm left their own recent range
first, ranked (update-norm spikes precede loss spikes, larger in the lower layers:
marin#1368; metaseq and llm-foundry act on such spikes)."""

from __future__ import annotations

import numpy as np

from gradlab import stat_names as S
from gradlab.findings.finding import WARNING, Finding
from gradlab.findings.rule import Rule
from gradlab.findings.thresholds import Threshold

THRESHOLDS = {
    "factor": Threshold(3.0, "a loss this many times its running mean is a spike",
                        "llm-foundry's KillLossSpike flags 2x its window mean (outlier_multiplier=2, over 100 "
                        "steps); gradlab takes 3x over a shorter window, as small batches vary more"),
    "window": Threshold(10, "steps of the running mean", "gradlab: ten steps, enough to be stable on small batches"),
    "range": Threshold(5.0, "a layer whose ||dL/dW|| is this many times its recent median has left its range",
                       "gradlab's calibration: on the pathology suite's healthy runs a layer's ||dL/dW|| stays within "
                       "2.75x of its 10-step median (2026-12-06)"),
}


def check(view, th):
    loss = view.loss
    loss = loss[np.isfinite(loss.to_numpy())]
    window = int(th["window"])
    if len(loss) <= window:
        return []
    mean = loss.rolling(window).mean().shift(1)
    spikes = loss[(loss > th["factor"] * mean) & (mean > 0)]
    out = []
    table = view.table(S.GRAD_NORM)
    for step, value in spikes.items():
        if out and step - out[-1].first_step <= window:
            continue  # the same spike, still settling
        movers = _movers(table, step, window, th["range"])
        out.append(Finding(
            RULE.name, WARNING, view.key, f"loss spike at step {step:,}: {value / mean[step]:.3g}x its running mean",
            f"loss {value:.4g} at step {step:,} against a mean of {mean[step]:.4g} over the {window} steps before "
            f"(line: {th['factor']:g}x)" + (f"; first out of range: {', '.join(f'{k} {v:.3g}x' for k, v in movers)}"
                                            if movers else ""),
            "one batch drove the loss far above its trend; the layers named moved first",
            "look at the batch of that step; clip gradients, lower the learning rate or warm it up, or skip such "
            "batches",
            where=view.places([k for k, _ in movers]), first_step=int(step), figure="curves",
        ))  # fmt: skip
    return out


def _movers(table, step, window, line) -> list[tuple[str, float]]:
    """Layers whose ||dL/dW|| at ``step`` (or the recorded step just before) left their median
    of the ``window`` steps before by ``line`` or more, largest first (three at most)."""
    if table.empty or step not in table.index:
        return []
    before = table.loc[:step].iloc[-window - 1 : -1]
    if before.empty:
        return []
    ratio = (table.loc[step] / before.median()).replace([np.inf, -np.inf], np.nan).dropna()
    ratio = ratio[ratio >= line].sort_values(ascending=False)
    return list(ratio.head(3).items())


RULE = Rule("loss_spike", "a step whose loss jumps far above its running mean, and the layers that moved first",
            ("loss", S.GRAD_NORM), THRESHOLDS, check)  # fmt: skip
