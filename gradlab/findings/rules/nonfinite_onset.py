"""Non-finite onset: the first step, and the first layer in the order the values were made,
where a NaN or Inf appeared: the root cause, not the symptom downstream. Weights come before
activations (forward, shallowest first) before gradients (backward, deepest first), as the
recorder itself orders its first sighting (status.json "nonfinite"), which is read first;
the rows are the fallback."""

from __future__ import annotations

import numpy as np

from gradlab import stat_names as S
from gradlab.findings.finding import ERROR, Finding
from gradlab.findings.rule import Rule

WEIGHT_STATS = (S.WEIGHT_NORM,)
ACT_STATS = (S.ACT_MEAN, S.ACT_STD)
GRAD_STATS = (S.ACT_GRAD_NORM, S.GRAD_NORM)


def _from_rows(view) -> dict | None:
    """The first non-finite value in the rows, ordered as the recorder orders its sighting."""
    rows = view.layers
    nonfinite = ~np.isfinite(rows["value"].to_numpy())
    if not nonfinite.any():  # (the usual case, decided without reading the names)
        return None
    bad = rows[nonfinite & rows["stat"].isin(WEIGHT_STATS + ACT_STATS + GRAD_STATS).to_numpy()]
    if bad.empty:
        return None
    first = bad[bad["step"] == bad["step"].min()]
    for what, stats, deepest in (("weight", WEIGHT_STATS, False), ("activation", ACT_STATS, False),
                                 ("grad", GRAD_STATS, True)):  # fmt: skip
        hits = first[first["stat"].isin(stats)].sort_values("position", ascending=not deepest)
        if len(hits):
            return {"step": int(hits["step"].iloc[0]), "layer": str(hits["layer"].iloc[0]), "what": what}
    return None


def _loss_step(view) -> int | None:
    """The first step of an infinite loss, or the step a diverged run's trainer saw a NaN
    loss at (a NaN in the metrics may only mean "not logged here")."""
    loss = view.loss
    bad = loss[np.isinf(loss.to_numpy())]
    if len(bad):
        return int(bad.index[0])
    step = view.status.get("diverged_step")
    return int(step) if view.status.get("state") == "diverged" and "loss became" in view.status.get("message", "") \
        and step is not None else None  # fmt: skip


def check(view, th):
    seen = view.status.get("nonfinite") or _from_rows(view)
    loss_step = _loss_step(view)
    if not seen and loss_step is None:
        return []
    loss_note = "the loss stayed finite" if loss_step is None else f"the loss was first non-finite at step {loss_step:,}"
    if not seen:
        return [Finding(RULE.name, ERROR, view.key, f"the loss became non-finite at step {loss_step:,}",
                        f"{loss_note}; no layer statistics show where (recording was off or sparse there)",
                        EXPLANATION, SUGGESTION, first_step=loss_step, figure="curves")]  # fmt: skip
    layer = str(seen["layer"])
    owner = layer.removesuffix(".weight").removesuffix(".bias")
    place = view.place(layer) if layer in view.positions else view.place(owner)
    return [Finding(
        RULE.name, ERROR, view.key,
        f"first non-finite {seen['what']} in {layer} at step {int(seen['step']):,}",
        f"{seen['what']} of {layer} (position {place.position}) non-finite at step {int(seen['step']):,}, before any "
        f"other layer; {loss_note}",
        EXPLANATION, SUGGESTION, where=(place,), first_step=int(seen["step"]), figure="gradient_heatmap",
    )]  # fmt: skip


EXPLANATION = "a NaN or Inf appeared here first; every non-finite value after it follows from this one"
SUGGESTION = ("look at this layer at that step: lower the learning rate, clip gradients, guard divisions and "
              "logarithms, or keep this layer in float32 under mixed precision")
RULE = Rule("nonfinite_onset", "the first layer and step where a NaN or Inf appeared",
            (*WEIGHT_STATS, *ACT_STATS, *GRAD_STATS, "loss", "status"), {}, check)  # fmt: skip
