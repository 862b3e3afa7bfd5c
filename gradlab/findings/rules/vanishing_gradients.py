"""Vanishing gradients along depth: ||dL/dh|| shrinking from the output towards the input
over the comparable layers (Hochreiter 1991; Glorot & Bengio 2010 for saturating
activations), judged by a robust trend, never by the first and last layer alone."""

from __future__ import annotations

from gradlab import stat_names as S
from gradlab.findings.rule import Rule
from gradlab.findings.rules import gradient_trend as G


def check(view, th):
    return G.findings(
        view, th, RULE.name, grows=False,
        explanation="the gradient reaching the early layers is orders of magnitude smaller than at the output, "
                    "so they barely learn",
        suggestion="normalize (BatchNorm, LayerNorm), use ReLU-like activations instead of sigmoid/tanh, add "
                   "identity shortcuts, or use a depth-aware initialization (He et al. 2015)",
    )  # fmt: skip


RULE = Rule("vanishing_gradients", "gradients that shrink along depth towards the input",
            (S.ACT_GRAD_NORM, S.GRAD_NORM), G.THRESHOLDS, check)  # fmt: skip
