"""Host-side derivation: the raw columns of recorded steps become the recorder's frame.

The device writes raw values (sums, norms, counts: gradlab.recorder.layout); here, at flush
time and in numpy, each statistic's own derivation (gradlab.recorder.statistics) turns them
into rows in long format (step, layer, index, kind, stat, value), and the first non-finite
value is found. Nothing here touches the device.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab.recorder import histograms as H
from gradlab.recorder import statistics as T
from gradlab.recorder.layout import Layout

__all__ = ["FRAME_COLUMNS", "HIST_COLUMNS", "empty_frame", "empty_hist_frame", "first_nonfinite", "frame",
           "hist_frame"]  # fmt: skip

FRAME_COLUMNS = ["step", "layer", "index", "kind", "stat", "value"]
HIST_COLUMNS = ["step", "layer", "index", "kind", "bin", "lower", "upper", "count"]


def frame(layout: Layout, raw, written, numel, steps) -> pd.DataFrame:
    """Rows of the layout's statistics for recorded steps ``steps``.

    raw: [steps, columns] float64 values; written: which of them a hook or step() wrote;
    numel: [steps, points] how many elements each point's sums and norms cover.
    """
    n = len(steps)
    measured = numel > 0
    frames = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for stat in layout.statistics:
            columns = layout.columns(stat)
            keys = layout.keys(stat.site)
            if columns is None or not keys or n == 0:
                continue
            values = RawColumns(raw, written, columns, numel)
            ok = np.logical_and.reduce([values.ok(need) for need in stat.needs])
            if stat.per_element:
                ok = ok & measured
            frames.append(_rows(stat.name, keys, stat.derive(values), ok, steps))
    frames = [f for f in frames if f is not None]
    if not frames:
        return empty_frame()
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values(["step", "index", "layer"], kind="stable", ignore_index=True)
    return typed(df)


class RawColumns:
    """A statistic's raw values over the recorded steps: ``raw[need]`` is a [steps, sites]
    float64 array (NaN where a site has no such column), ``numel`` the elements each
    point's output reductions cover."""

    def __init__(self, raw, written, columns: dict, numel):
        self._raw, self._written, self._columns, self.numel = raw, written, columns, numel

    def __getitem__(self, need) -> np.ndarray:
        return self._take(self._raw, need, np.nan)

    def ok(self, need) -> np.ndarray:
        """Where the value was written (a column -1, a point without it: never)."""
        return self._take(self._written, need, False)

    def _take(self, source, need, missing):
        c = self._columns[need]
        has = c >= 0
        out = np.full((source.shape[0], len(c)), missing, dtype=source.dtype)
        out[:, has] = source[:, c[has]]
        return out


def _rows(stat: str, keys, values: np.ndarray, ok: np.ndarray, steps) -> pd.DataFrame | None:
    rows, kcols = np.nonzero(ok)
    if not len(rows):
        return None
    layers = np.array([k[0] for k in keys], dtype=object)
    idx = np.array([k[1] for k in keys], dtype=np.int32)
    kinds = np.array([k[2] for k in keys], dtype=object)
    return pd.DataFrame(
        {
            "step": steps[rows].astype(np.int64),
            "layer": layers[kcols],
            "index": idx[kcols],
            "kind": kinds[kcols],
            "stat": np.full(len(rows), stat, dtype=object),
            "value": values[rows, kcols].astype(np.float64),
        }
    )


def first_nonfinite(layout: Layout, raw, written, steps) -> dict | None:
    """{"step", "layer", "what"} of the first non-finite value among these steps, or None.

    Ordered by step, then weights before activations before gradients; among weights and
    activations the shallowest, among gradients the deepest (where backward produced it
    first). A norm or a sum is non-finite iff an element is (or it overflowed float32), so
    this costs no pass over the data.
    """
    bad = ~np.isfinite(raw) & written
    bad[:, layout.params.get(T.P_UPDATE, [])] = False  # NaN by definition on the first record
    if not bad.any():
        return None
    # what -> [(column, (index, priority), layer)]; the best hit of the first bad row wins
    groups: dict[str, list[tuple[int, tuple[int, int], str]]] = {"weight": [], "activation": [], "grad": []}
    for what, raw_name, rank in (("weight", T.P_WEIGHT, -1), ("grad", T.P_GRAD, 1)):
        for c, (name, index, _) in zip(layout.params.get(raw_name, []), layout.param_keys):
            groups[what].append((c, (rank * index, 0), name))
    for pt, (name, index, _) in zip(layout.points, layout.point_keys):
        for _, c in pt.reductions:
            groups["activation"].append((c, (-index, 0), name))
        if pt.grad_col >= 0:
            # at equal depth dL/dh is computed before dL/dW
            groups["grad"].append((pt.grad_col, (index, 1), name))
    for c, (name, index, _) in zip(layout.blocks.get(T.INPUT_NORM, []), layout.block_keys):
        groups["activation"].append((c, (-index, 0), name))
    first_row = int(np.nonzero(bad.any(axis=1))[0][0])
    for what in ("weight", "activation", "grad"):
        hits = [(key, layer) for c, key, layer in groups[what] if bad[first_row, c]]
        if hits:
            # weights and activations: the shallowest; gradients: the deepest (backward starts there)
            _, layer = max(hits, key=lambda h: h[0])
            return {"step": int(steps[first_row]), "layer": layer, "what": what}
    return None


def hist_frame(layout: Layout, counts: np.ndarray, steps: np.ndarray) -> pd.DataFrame:
    """Rows of gradient histograms: counts [steps, params, bins] in long format."""
    n, n_params, n_bins = counts.shape
    edges = H.bin_edges()
    keys = layout.param_keys
    step = np.repeat(steps, n_params * n_bins)
    layer = np.tile(np.repeat(np.array([k[0] for k in keys], dtype=object), n_bins), n)
    index = np.tile(np.repeat(np.array([k[1] for k in keys], dtype=np.int32), n_bins), n)
    kind = np.tile(np.repeat(np.array([k[2] for k in keys], dtype=object), n_bins), n)
    b = np.tile(np.arange(n_bins, dtype=np.int32), n * n_params)
    df = pd.DataFrame(
        {
            "step": step.astype(np.int64),
            "layer": layer,
            "index": index,
            "kind": kind,
            "bin": b,
            "lower": edges[b],
            "upper": edges[b + 1],
            "count": counts.reshape(-1).round().astype(np.int64),
        }
    )
    for c in ("layer", "kind"):
        df[c] = df[c].astype(str)
    return df


def typed(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(
        {"step": np.int64, "layer": str, "index": np.int32, "kind": str, "stat": str, "value": np.float64}
    )


def empty_frame() -> pd.DataFrame:
    return typed(pd.DataFrame({c: [] for c in FRAME_COLUMNS}))


def empty_hist_frame() -> pd.DataFrame:
    df = pd.DataFrame({c: [] for c in HIST_COLUMNS})
    return df.astype(
        {
            "step": np.int64,
            "layer": str,
            "index": np.int32,
            "kind": str,
            "bin": np.int32,
            "lower": np.float64,
            "upper": np.float64,
            "count": np.int64,
        }
    )
