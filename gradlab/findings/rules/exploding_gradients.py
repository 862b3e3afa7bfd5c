"""Exploding gradients, along depth and over time: ||dL/dh|| growing from the output towards
the input over the comparable layers (Bengio et al. 1994; deep plain nets at init in He et
al. 2015's degradation experiment), judged by a robust trend; or the gradient norms growing
by orders of magnitude from one step to a later one (a learning rate far too high), judged by
the median over the weight matrices against its median over the first records."""

from __future__ import annotations

from gradlab import stat_names as S
from gradlab.findings.depth_trend import episodes
from gradlab.findings.finding import ERROR, WARNING, Finding
from gradlab.findings.rule import Rule
from gradlab.findings.rules import gradient_trend as G
from gradlab.findings.thresholds import Threshold

SUITE = ("gradlab's calibration: healthy runs of the pathology suite grow at most 11x over their first records "
         "(Fixup and ReZero on digits up to 1e9x as their branches open, with a falling loss, which the rule "
         "leaves alone; 2026-12-06), a learning rate 150x too high 1.3e7x within 4 steps")  # fmt: skip
THRESHOLDS = {
    **G.THRESHOLDS,
    "growth": Threshold(1e3, "growth of the median ||dL/dW|| over its first records that is a warning", SUITE),
    "growth_error": Threshold(1e6, "the growth that is an error", SUITE),
}
FIRST_RECORDS = 5
EXPLANATION = ("each layer amplifies the gradient on its way back, so the early layers get updates orders of "
               "magnitude larger than the late ones")  # fmt: skip
SUGGESTION = ("add identity shortcuts or a residual-friendly init (Fixup, ReZero, zero-init of the last BN of each "
              "branch), lower the learning rate, or clip gradients")  # fmt: skip


def over_time(view, th) -> list[Finding]:
    table = view.table(S.GRAD_NORM)
    table = table[view.matrices(table.columns)] if not table.empty else table
    if table.shape[0] < 3 or table.shape[1] == 0:
        return []
    first_records = min(FIRST_RECORDS, table.shape[0] // 3)  # a run that blows up in 5 steps: its first one
    median = table.median(axis=1)
    base = median.iloc[:first_records].median()
    if not base > 0:
        return []
    growth = median / base
    spans = [(a, b) for a, b in episodes(growth >= th["growth"]) if b > a]  # two records at least: one is a spike
    if not spans or not _loss_rises(view, spans[0][0], spans[-1][1]):
        return []
    first, last = spans[0][0], spans[-1][1]
    worst_step = growth.loc[first:last].idxmax()
    worst = float(growth.loc[worst_step])
    movers = (table.loc[worst_step] / table.iloc[:first_records].median()).nlargest(3)
    return [Finding(
        RULE.name, ERROR if worst >= th["growth_error"] else WARNING, view.key,
        f"||dL/dW|| grows {worst:,.3g}x over training, from step {first:,}",
        f"median ||dL/dW|| of the weight matrices at step {worst_step:,}: {worst:,.3g}x its median over the first "
        f"{first_records} record(s) (line: {th['growth']:g}x a warning, {th['growth_error']:g}x an error); "
        f"{', '.join(f'{k} {v:.3g}x' for k, v in movers.items())}",
        "the gradients grow by orders of magnitude from step to step: the updates feed on themselves",
        "lower the learning rate (or warm it up), clip gradients, or normalize",
        where=view.places(movers.index), first_step=int(first), last_step=int(last), figure="gradient_heatmap",
        extra={"factor": worst, "over": "time"},
    )]  # fmt: skip


def _loss_rises(view, first: int, last: int) -> bool:
    """Whether the loss logged within [first, last] exceeds its first logged value: gradients
    that grow while the loss falls are a net growing into its task (a Fixup or ReZero branch
    opening from zero), not an explosion."""
    loss = view.loss
    if loss.empty:
        return False
    during = loss[(loss.index >= first) & (loss.index <= last)]
    return bool(len(during)) and float(during.max()) > float(loss.iloc[0])


def check(view, th):
    return G.findings(view, th, RULE.name, grows=True, explanation=EXPLANATION, suggestion=SUGGESTION) + \
        over_time(view, th)  # fmt: skip


RULE = Rule("exploding_gradients", "gradients that grow along depth towards the input, or by orders of magnitude "
            "over training", (S.ACT_GRAD_NORM, S.GRAD_NORM), THRESHOLDS, check)  # fmt: skip
