"""Gradients exactly zero: main-path weights whose ||dL/dW|| is exactly 0, a path the
gradient cannot pass (a zero-initialized gate or classifier, dead units, a detached
branch). At the first recorded step it is what Fixup, ReZero and SkipInit do by design, so
it is *info*; still exactly zero ``persist`` steps later it is a warning."""

from __future__ import annotations

from gradlab import stat_names as S
from gradlab.findings.finding import INFO, WARNING, Finding, layers
from gradlab.findings.rule import Rule
from gradlab.findings.thresholds import Threshold

THRESHOLDS = {"persist": Threshold(
    50, "steps after the first record at which an exact zero is no longer a gate opening",
    "gradlab's calibration: ReZero's and Fixup's gates pass a gradient from the second step on (digits, 2026-12-06)")}


def check(view, th):
    table = view.table(S.GRAD_NORM)
    if table.empty:
        return []
    table = table[[c for c in table.columns if not c.endswith(".bias")]]
    zero = table == 0.0
    first_step = int(table.index[0])
    out = []
    at_init = zero.iloc[0]
    if at_init.any():
        gated = at_init[at_init].index
        later = table.index[table.index >= first_step + th["persist"]]
        stuck = [c for c in gated if len(later) and zero.loc[later, c].all()]
        if stuck:
            out.append(Finding(
                RULE.name, WARNING, view.key, f"||dL/dW|| is exactly 0 in {layers(len(stuck))} from step {first_step:,} on",
                f"exactly 0 at every recorded step from {first_step:,} to {int(table.index[-1]):,} (line: still 0 "
                f"{th['persist']:g} steps after the first record)",
                "no gradient ever reaches these layers: they do not learn", SUGGESTION,
                where=view.places(stuck), first_step=first_step, last_step=int(table.index[-1]), figure="gradient_heatmap"))  # fmt: skip
        opened = [c for c in gated if c not in stuck]
        if opened:
            out.append(Finding(
                RULE.name, INFO, view.key, f"||dL/dW|| is exactly 0 in {layers(len(opened))} at step {first_step:,}",
                "exactly 0 at the first recorded step, non-zero later",
                "a path is blocked at the first step and opens later: what a zero-initialized gate, classifier or "
                "last norm of a branch does by design (Fixup, ReZero, SkipInit, zero-init-residual), or units that "
                "start dead and revive", "nothing, if the net is built so; else check the layers' init and biases",
                where=view.places(opened), first_step=first_step, figure="gradient_heatmap"))  # fmt: skip
    became = zero & (~zero).cummax().shift(1, fill_value=False)  # exactly zero after it was not
    cols = [c for c in became.columns if became[c].any()]
    if cols:
        start = int(became[cols].any(axis=1).idxmax())
        out.append(Finding(
            RULE.name, WARNING, view.key, f"||dL/dW|| became exactly 0 in {layers(len(cols))} at step {start:,}",
            f"not 0 at an earlier recorded step, exactly 0 from step {start:,} on",
            "the gradient stopped reaching these layers during training: units that died, or a diverged net",
            SUGGESTION, where=view.places(cols), first_step=start, last_step=int(table.index[-1]),
            figure="gradient_heatmap"))  # fmt: skip
    return out


SUGGESTION = ("check what feeds these layers: a gate or scale stuck at 0, ReLUs that no longer fire (lower the "
              "learning rate, or use a leaky activation), or a branch detached from the graph")
RULE = Rule("zero_gradients", "weights whose gradient is exactly zero (a blocked path)", (S.GRAD_NORM,),
            THRESHOLDS, check)  # fmt: skip
