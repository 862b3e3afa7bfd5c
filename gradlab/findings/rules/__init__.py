"""The rules, one per module; RULES maps each name to its Rule, in the order findings of
equal severity are listed."""

from __future__ import annotations

from gradlab.findings.rules import (activation_trend, dead_units, degradation, exploding_gradients, loss_not_decreasing,
                                    loss_spike, nonfinite_onset, not_learning, saturation, update_ratio,
                                    vanishing_gradients, zero_gradients)

RULES = {m.RULE.name: m.RULE for m in (nonfinite_onset, exploding_gradients, vanishing_gradients, activation_trend,
                                        zero_gradients, dead_units, saturation, update_ratio, not_learning, loss_spike,
                                        loss_not_decreasing, degradation)}  # fmt: skip
