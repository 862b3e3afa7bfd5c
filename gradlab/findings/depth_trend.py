"""The trend of a statistic along depth, judged robustly: the Theil–Sen slope (the median of
the pairwise slopes; Sen 1968) of log10(value) against the rank of each comparable layer,
times the span. One layer out of line (a classifier, an embedding, a query projection that
starts tiny) moves the median little, where a first-to-last ratio follows it entirely.

Comparable layers: main path, of the most common weighted kind (conv in a conv net, fc in an
MLP or a transformer), values finite and positive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["comparable", "episodes", "trend_by_step"]

WEIGHTED = ("conv", "fc")


def comparable(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the most common weighted kind (``rows``: one statistic, main path)."""
    kinds = rows[rows["kind"].isin(WEIGHTED)].drop_duplicates("layer")["kind"]
    if kinds.empty:
        return rows.iloc[0:0]
    return rows[rows["kind"] == kinds.value_counts().index[0]]


def trend_by_step(table: pd.DataFrame, min_layers: int = 4) -> pd.Series:
    """Per step (``table``: step × layer in depth order): how many times larger the value is
    at the input end than at the output end along the fitted line (> 1: grows towards the
    input; < 1: shrinks), over the layers with a finite positive value; NaN with fewer than
    ``min_layers``."""
    logs = np.log10(table.where(table > 0).to_numpy(np.float64))
    n = logs.shape[1]
    out = np.full(len(table), np.nan)
    if n < min_layers:
        return pd.Series(out, index=table.index)
    i, j = np.triu_indices(n, k=1)
    slopes = (logs[:, j] - logs[:, i]) / (j - i)  # per step: every pair of layers
    ok = np.isfinite(slopes)
    counts = np.isfinite(logs).sum(axis=1)
    for row in np.nonzero(counts >= min_layers)[0]:
        s = np.median(slopes[row, ok[row]])
        finite = np.nonzero(np.isfinite(logs[row]))[0]
        out[row] = 10.0 ** (-s * (finite[-1] - finite[0]))  # the input end over the output end
    return pd.Series(out, index=table.index)


def episodes(flags: pd.Series) -> list[tuple[int, int]]:
    """(first, last) step of each run of consecutive True values of ``flags`` (by step)."""
    out, start, prev = [], None, None
    for step, flag in flags.items():
        if flag and start is None:
            start = step
        if not flag and start is not None:
            out.append((start, prev))
            start = None
        prev = step
    if start is not None:
        out.append((start, prev))
    return out
