"""Saturated sigmoid/tanh layers: the fraction of a layer's outputs in the activation's flat
tails (act_sat_frac: sigmoid below 0.01 or above 0.99, tanh beyond ±0.99, recorded when
asked for where such activations follow a layer), where the slope is a few percent of its
peak and little gradient passes (Glorot & Bengio 2010 on saturated top sigmoid layers;
SageMaker Debugger's saturated_activation rule)."""

from __future__ import annotations

from gradlab import stat_names as S
from gradlab.findings.finding import ERROR, WARNING, Finding, layers
from gradlab.findings.rule import Rule
from gradlab.findings.rules.fractions import over_line
from gradlab.findings.thresholds import Threshold

OWN = "gradlab: half of a layer's outputs passing at most 4 % of the activation's peak slope (act_sat_frac's tails)"
THRESHOLDS = {
    "warning": Threshold(0.5, "fraction of a layer's outputs in the flat tails that is a warning", OWN),
    "error": Threshold(0.9, "the fraction that is an error", "gradlab: nine outputs in ten pass almost no gradient"),
}


def check(view, th):
    hit = over_line(view, S.ACT_SAT_FRAC, th["warning"])
    if hit is None:
        return []
    worst = hit.worst
    return [Finding(
        RULE.name, ERROR if worst.iloc[0] >= th["error"] else WARNING, view.key,
        f"{layers(len(hit.layers))} saturate their sigmoid/tanh: {worst.iloc[0]:.0%} of outputs in the flat tails, "
        f"from step {hit.first_step:,}",
        f"fraction of outputs in the flat tails: {', '.join(f'{k} {v:.0%}' for k, v in worst.head(3).items())} "
        f"(line: {th['warning']:.0%} a warning, {th['error']:.0%} an error)",
        "a saturated sigmoid or tanh passes only a few percent of the gradient, so the layers before it barely learn",
        "scale the init down (Glorot & Bengio 2010), normalize before the activation, lower the learning rate, or "
        "use ReLU-like activations",
        where=view.places(worst.index[:4]), first_step=hit.first_step, last_step=hit.last_step, figure="activations",
    )]  # fmt: skip


RULE = Rule("saturation", "sigmoid/tanh layers whose outputs sit in the flat tails", (S.ACT_SAT_FRAC,), THRESHOLDS,
            check)  # fmt: skip
