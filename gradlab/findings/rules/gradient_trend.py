"""What the vanishing- and exploding-gradient rules share: the trend of ||dL/dh|| (else
||dL/dW||) along the comparable layers at every recorded step (gradlab.findings.depth_trend),
and the episodes where it crosses a line.

Calibration (gradlab's own, 2026-12-06, on the runs behind reports/families-digits): the
largest trend of a healthy net was 17x (ReZero-20 early in training, shrinking; BN ResNets
up to 10x growing towards the input at init, NF-ResNets up to 7x), while plain-56 grows
2,900x at init and plain-110 4e6x (and shrinks 1e23x once it has degraded). A warning at
100x leaves healthy nets a margin of 6x; an error at 1e4x.
"""

from __future__ import annotations

import pandas as pd

from gradlab import stat_names as S
from gradlab.findings.depth_trend import comparable, episodes, trend_by_step
from gradlab.findings.finding import ERROR, WARNING, Finding
from gradlab.findings.thresholds import Threshold
from gradlab.findings.view import RunView, by_step

CALIBRATED = ("gradlab's calibration on healthy runs (reports/families-digits: at most 17x in BN ResNets, "
              "NF-ResNets, ReZero; 2026-12-06)")  # fmt: skip
THRESHOLDS = {
    "warning": Threshold(100.0, "the factor between the input and the output end that is a warning", CALIBRATED),
    "error": Threshold(1e4, "the factor that is an error", CALIBRATED),
}
FIGURE = "gradient_flow"


def trend(view: RunView) -> tuple[str, pd.DataFrame, pd.Series]:
    """(statistic, its step × layer table over the comparable layers, the trend per step)."""
    for stat in (S.ACT_GRAD_NORM, S.GRAD_NORM):
        rows = comparable(view.stat(stat))
        if rows["layer"].nunique() >= 4:
            table = by_step(rows)
            return stat, table, trend_by_step(table)
    return "", pd.DataFrame(), pd.Series(dtype=float)


def findings(view: RunView, th: dict, rule: str, grows: bool, explanation: str, suggestion: str) -> list[Finding]:
    """A finding when the trend passes th['warning'] in the rule's direction (``grows``:
    towards the input) at some step: from the first such step to the last, its severity and
    evidence those of its worst step."""
    stat, table, factor = trend(view)
    size = factor if grows else 1.0 / factor
    spans = episodes(size >= th["warning"]) if len(size) else []
    if not spans:
        return []
    first, last = spans[0][0], spans[-1][1]
    worst_step = size.loc[first:last].idxmax()
    worst = float(size.loc[worst_step])
    ends = table.loc[worst_step].dropna()
    extreme = ends.nlargest(3) if grows else ends.nsmallest(3)
    what = "||dL/dh||" if stat == S.ACT_GRAD_NORM else "||dL/dW||"
    return [Finding(
        rule=rule, severity=ERROR if worst >= th["error"] else WARNING, run=view.key,
        summary=f"{what} {'grows' if grows else 'shrinks'} {worst:,.3g}x from the output end to the input end of "
                f"the {len(ends)} comparable layers",
        evidence=(f"Theil–Sen trend of log {what} over depth: {worst:,.3g}x at step {worst_step:,}, beyond the line "
                  f"at {len(spans)} stretch(es) of steps (line: {th['warning']:g}x a warning, {th['error']:g}x an "
                  f"error); {', '.join(f'{k} {v:.3g}' for k, v in extreme.items())}"),
        explanation=explanation, suggestion=suggestion,
        where=view.places(extreme.index), first_step=int(first), last_step=int(last), figure=FIGURE,
        extra={"factor": worst, "stat": stat, "worst_step": int(worst_step)},
    )]  # fmt: skip
