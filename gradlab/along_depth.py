"""Numbers of a per-layer quantity along depth, shared by the analyses and the report.

Gradient norms along depth span orders of magnitude, so seeds are averaged on a log scale
and a line is summarised by the ratio of its first conv layer to its last (He et al. 2015
discuss vanishing and exploding gradients in these terms). numpy and pandas only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["first_last_ratio", "positive_logs"]


def positive_logs(values) -> np.ndarray:
    """log of each positive finite value, NaN elsewhere (for geometric means that skip them)."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    return np.where(ok, np.log(np.where(ok, v, 1.0)), np.nan)


def first_last_ratio(line: pd.DataFrame) -> float | None:
    """value at the first conv layer / value at the last conv layer (not the classifier);
    None when there are fewer than two layers or an end is not finite."""
    conv = line[line["kind"] == "conv"] if "kind" in line and (line["kind"] == "conv").any() else line
    conv = conv.sort_values("position")
    if len(conv) < 2:
        return None
    first, last = conv["value"].iloc[0], conv["value"].iloc[-1]
    if not (np.isfinite(first) and np.isfinite(last)) or last <= 0:
        return None
    return float(first / last)
