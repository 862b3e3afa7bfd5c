"""Dead units: layers where a large fraction of the units (channels, features) output zero
for every example of the sampled batch (act_dead_frac, recorded next to ReLUs when asked
for). A unit dead on a whole batch gets no gradient and stays dead (Lu et al. 2019, "Dying
ReLU"; SageMaker Debugger's dead_relu rule)."""

from __future__ import annotations

from gradlab import stat_names as S
from gradlab.findings.finding import ERROR, WARNING, Finding, layers
from gradlab.findings.rule import Rule
from gradlab.findings.rules.fractions import over_line
from gradlab.findings.thresholds import Threshold

SAGEMAKER = "SageMaker Debugger's dead_relu rule (threshold_layer 50 %), documented default"
THRESHOLDS = {
    "warning": Threshold(0.5, "fraction of a layer's units dead on the whole batch that is a warning", SAGEMAKER),
    "error": Threshold(0.9, "the fraction that is an error", "gradlab: nine units in ten no longer learn"),
}


def check(view, th):
    hit = over_line(view, S.ACT_DEAD_FRAC, th["warning"])
    if hit is None:
        return []
    return [Finding(
        RULE.name, ERROR if hit.worst.iloc[0] >= th["error"] else WARNING, view.key,
        f"{layers(len(hit.layers))} have {th['warning']:.0%} or more dead units, from step {hit.first_step:,}",
        f"dead fraction (units zero for every example of the batch): "
        f"{', '.join(f'{k} {v:.0%}' for k, v in hit.worst.head(3).items())} (line: {th['warning']:.0%} a warning, "
        f"{th['error']:.0%} an error)",
        "these units output zero for every input, so they get no gradient and cannot recover",
        "lower the learning rate, check biases initialized negative, use a leaky or smooth activation (LeakyReLU, "
        "GELU), or normalize before the ReLU",
        where=view.places(hit.layers), first_step=hit.first_step, last_step=hit.last_step, figure="activations",
    )]  # fmt: skip


RULE = Rule("dead_units", "layers whose units are zero for every example (dead ReLUs)", (S.ACT_DEAD_FRAC,),
            THRESHOLDS, check)  # fmt: skip
