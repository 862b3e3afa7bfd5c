"""Exploding gradients along depth: ||dL/dh|| growing from the output towards the input over
the comparable layers (Bengio et al. 1994; in deep plain nets at init, He et al. 2015's
degradation experiment), judged by a robust trend."""

from __future__ import annotations

from gradlab import stat_names as S
from gradlab.findings.rule import Rule
from gradlab.findings.rules import gradient_trend as G


def check(view, th):
    return G.findings(
        view, th, RULE.name, grows=True,
        explanation="each layer amplifies the gradient on its way back, so the early layers get updates orders "
                    "of magnitude larger than the late ones",
        suggestion="add identity shortcuts or a residual-friendly init (Fixup, ReZero, zero-init of the last BN "
                   "of each branch), lower the learning rate, or clip gradients",
    )  # fmt: skip


RULE = Rule("exploding_gradients", "gradients that grow along depth towards the input",
            (S.ACT_GRAD_NORM, S.GRAD_NORM), G.THRESHOLDS, check)  # fmt: skip
