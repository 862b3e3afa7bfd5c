"""What the trackers share: their error, the names of per-layer statistics, and which
values are worth logging. One definition, so W&B and TensorBoard panels carry the same names."""

from __future__ import annotations

import math
import numbers

from gradlab.errors import GradlabError


class TrackingError(GradlabError):
    """A tracker cannot be used as asked (bad W&B mode, missing credentials, bad TensorBoard folder)."""


def layer_key(stat: str, index: int, layer: str) -> str:
    """Stable key of one layer statistic: depth index first, so panels sort in depth order."""
    return f"{stat}/{int(index):03d}.{layer}"


def finite(value) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite: what a tracker logs."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
