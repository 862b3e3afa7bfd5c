"""Activations growing or collapsing along depth: the std of the main path's outputs (the
residual blocks' outputs in a zoo net, else the comparable layers') changing by orders of
magnitude from the input end to the output end: a residual stream that blows up, or a signal
that dies out (Brock et al. 2021's signal propagation plots; De & Smith 2020)."""

from __future__ import annotations

import pandas as pd

from gradlab import stat_names as S
from gradlab.findings.depth_trend import comparable, episodes, trend_by_step
from gradlab.findings.finding import ERROR, WARNING, Finding
from gradlab.findings.rule import Rule
from gradlab.findings.thresholds import Threshold
from gradlab.findings.view import by_step

CALIBRATED = ("gradlab's calibration on reports/families-digits: healthy nets within 4x (NF-ResNet-110 at the end), "
              "plain-110 collapsing 3.8e4x early in training (2026-12-06)")  # fmt: skip
THRESHOLDS = {
    "warning": Threshold(100.0, "the factor between the two ends of the main path that is a warning", CALIBRATED),
    "error": Threshold(1e4, "the factor that is an error", CALIBRATED),
}


def _table(view) -> pd.DataFrame:
    rows = view.stat(S.ACT_STD)
    blocks = rows[rows["kind"] == "block"]
    rows = blocks if blocks["layer"].nunique() >= 4 else comparable(rows)
    return by_step(rows) if rows["layer"].nunique() >= 4 else pd.DataFrame()


def check(view, th):
    table = _table(view)
    if table.empty:
        return []
    ratio = trend_by_step(table)  # the input end over the output end
    out = []
    for grows, size in ((True, 1.0 / ratio), (False, ratio)):
        spans = episodes(size >= th["warning"])
        if not spans:
            continue
        first, last = spans[0][0], spans[-1][1]
        worst_step = size.loc[first:last].idxmax()
        worst = float(size.loc[worst_step])
        ends = table.loc[worst_step].dropna()
        extreme = ends.nlargest(3) if grows else ends.nsmallest(3)
        word = "grows" if grows else "collapses"
        out.append(Finding(
            RULE.name, ERROR if worst >= th["error"] else WARNING, view.key,
            f"the activations' std {word} {worst:,.3g}x along the main path, from the input end to the output end",
            f"Theil–Sen trend of log std over {len(ends)} outputs: {worst:,.3g}x at step {worst_step:,} (line: "
            f"{th['warning']:g}x a warning, {th['error']:g}x an error); {', '.join(f'{k} {v:.3g}' for k, v in extreme.items())}",
            "the residual stream blows up with depth" if grows else "the signal dies out with depth",
            "normalize the main path or scale the branches (zero-init the last norm of each branch, ReZero, "
            "Fixup), or lower the learning rate" if grows else
            "add normalization or identity shortcuts, or use an init that preserves the signal (He et al. 2015)",
            where=view.places(extreme.index), first_step=int(first), last_step=int(last), figure="activations",
            extra={"factor": worst, "direction": word},
        ))  # fmt: skip
    return out


RULE = Rule("activation_trend", "activations that grow or collapse along depth", (S.ACT_STD,), THRESHOLDS, check)
