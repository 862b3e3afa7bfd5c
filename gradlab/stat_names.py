"""Names of the per-layer statistics in layers.parquet (shared by recorder and report).

Rows are long format: step, layer, index, kind, stat, value.

Parameter rows: layer = parameter name ("layer1.0.conv1.weight"), index and kind are
those of the probe point that owns the parameter.
Output rows: layer = probe point name, index and kind as in the model's probe points.
Block rows: layer = residual block name, kind = "block".
"""

from __future__ import annotations

from typing import Iterable

from gradlab.errors import RecorderError

# per parameter tensor
GRAD_NORM = "grad_norm"  # ||dL/dw||_2
WEIGHT_NORM = "weight_norm"  # ||w||_2
GRAD_WEIGHT_RATIO = "grad_weight_ratio"  # ||dL/dw|| / ||w||; NaN where ||w|| = 0 (zero-initialised biases)
UPDATE_NORM = "update_norm"  # ||w_t - w_prev_recorded||_2

# per probe point output h
ACT_MEAN = "act_mean"
ACT_STD = "act_std"  # on "bn" points: the layer response of He et al. 2015, Fig. 7
ACT_ZERO_FRAC = "act_zero_frac"  # fraction zeroed by the ReLU after (or producing) a point
ACT_GRAD_NORM = "act_grad_norm"  # ||dL/dh||_2, the vanishing-gradient curve along depth
ACT_DEAD_FRAC = "act_dead_frac"  # fraction of units (channels, features) <= 0 for every example: dead ReLUs
ACT_SAT_FRAC = "act_sat_frac"  # fraction of outputs in the flat tails of the sigmoid/tanh after a point

# per residual block
BRANCH_RATIO = "branch_ratio"  # ||F(x)|| / ||x||

PARAM_STATS = (GRAD_NORM, WEIGHT_NORM, GRAD_WEIGHT_RATIO, UPDATE_NORM)
OUTPUT_STATS = (ACT_MEAN, ACT_STD, ACT_ZERO_FRAC, ACT_GRAD_NORM)
BLOCK_STATS = (BRANCH_RATIO,)
DEFAULT_STATS = PARAM_STATS + OUTPUT_STATS + BLOCK_STATS
OPTIONAL_STATS = (ACT_DEAD_FRAC, ACT_SAT_FRAC)  # recorded when asked for (stats=[...])
ALL_STATS = DEFAULT_STATS + OPTIONAL_STATS


def checked(stats: Iterable[str] | str | None) -> tuple[str, ...]:
    """``stats`` as a tuple of known names, in order, without repeats (None: DEFAULT_STATS);
    an unknown name or an empty selection is a RecorderError naming the valid ones."""
    if stats is None:
        return DEFAULT_STATS
    if isinstance(stats, str):
        stats = [stats]
    stats = tuple(dict.fromkeys(stats))
    unknown = [s for s in stats if s not in ALL_STATS]
    if unknown:
        raise RecorderError(f"Unknown stat name(s): {', '.join(map(repr, unknown))}. Valid names: {', '.join(ALL_STATS)}.")
    if not stats:
        raise RecorderError(f"stats is empty; pick some of: {', '.join(ALL_STATS)} (leave stats out for the "
                            f"default ones: all but {', '.join(OPTIONAL_STATS)}).")
    return stats
