"""Host-side derivation: the raw columns of recorded steps become the recorder's frame.

The device writes sums, norms and counts (gradlab.recorder.layout); here, at flush time and
in numpy, they become means, stds, zero fractions, gradient/weight ratios and branch
ratios, in long format (step, layer, index, kind, stat, value), and the first non-finite
value is found. Nothing here touches the device.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab import stat_names as S
from gradlab.recorder import histograms as H
from gradlab.recorder.layout import Layout
from gradlab.recorder.reductions import COUNT_UNIT

__all__ = ["FRAME_COLUMNS", "HIST_COLUMNS", "empty_frame", "empty_hist_frame", "first_nonfinite", "frame",
           "hist_frame"]  # fmt: skip

FRAME_COLUMNS = ["step", "layer", "index", "kind", "stat", "value"]
HIST_COLUMNS = ["step", "layer", "index", "kind", "bin", "lower", "upper", "count"]


def frame(layout: Layout, stats: tuple[str, ...], raw, written, numel, steps) -> pd.DataFrame:
    """Rows of the statistics ``stats`` for recorded steps ``steps``.

    raw: [steps, columns] float64 values; written: which of them a hook or step() wrote;
    numel: [steps, points] how many elements each point's sums and norms cover.
    """
    n = len(steps)
    parts: list[tuple[str, list, np.ndarray, np.ndarray]] = []  # stat, keys, values[n,m], ok[n,m]
    want = set(stats)
    pk, ok_, bk = layout.param_keys, layout.point_keys, layout.block_keys

    def cols(c):  # column -1: a point without this statistic (NaN, never written)
        c = np.asarray(c, dtype=np.int64)
        has = c >= 0
        values = np.full((n, len(c)), np.nan)
        ok = np.zeros((n, len(c)), dtype=bool)
        values[:, has], ok[:, has] = raw[:, c[has]], written[:, c[has]]
        return values, ok

    with np.errstate(divide="ignore", invalid="ignore"):
        if layout.param_grad:
            g, gw = cols(layout.param_grad)
            if S.GRAD_NORM in want:
                parts.append((S.GRAD_NORM, pk, g, gw))
        if layout.param_weight:
            w, ww = cols(layout.param_weight)
            if S.WEIGHT_NORM in want:
                parts.append((S.WEIGHT_NORM, pk, w, ww))
        if S.GRAD_WEIGHT_RATIO in want:
            # undefined where ||w|| = 0 (a zero-initialised bias): NaN, which means skip
            parts.append((S.GRAD_WEIGHT_RATIO, pk, np.where(w > 0, g / w, np.nan), gw & ww))
        if layout.param_update:
            parts.append((S.UPDATE_NORM, pk, *cols(layout.param_update)))

        pts = layout.points
        measured = numel > 0
        if S.ACT_MEAN in want or S.ACT_STD in want:
            s1, s1w = cols([p.sum_col for p in pts])
            mean = s1 / numel
            if S.ACT_MEAN in want:
                parts.append((S.ACT_MEAN, ok_, mean, s1w & measured))
            if S.ACT_STD in want:
                nrm, nrmw = cols([p.norm_col for p in pts])
                var = np.maximum(nrm * nrm / numel - mean * mean, 0.0)
                var = np.where(np.isfinite(nrm) & np.isfinite(mean), var, np.nan)
                parts.append((S.ACT_STD, ok_, np.sqrt(var), s1w & nrmw & measured))
        if S.ACT_ZERO_FRAC in want:
            cnt, cntw = cols([p.count_col for p in pts])
            parts.append((S.ACT_ZERO_FRAC, ok_, 1.0 - np.rint(cnt / COUNT_UNIT) / numel, cntw & measured))
        if S.ACT_GRAD_NORM in want:
            parts.append((S.ACT_GRAD_NORM, ok_, *cols([p.grad_col for p in pts])))
        if layout.block_input:
            fx, fxw = cols(layout.branch_norm)
            x, xw = cols(layout.block_input)
            parts.append((S.BRANCH_RATIO, bk, fx / x, fxw & xw))

    frames = []
    for stat, keys, values, ok in parts:
        m = len(keys)
        if m == 0 or n == 0:
            continue
        rows, kcols = np.nonzero(ok)
        if not len(rows):
            continue
        layers = np.array([k[0] for k in keys], dtype=object)
        idx = np.array([k[1] for k in keys], dtype=np.int32)
        kinds = np.array([k[2] for k in keys], dtype=object)
        frames.append(
            pd.DataFrame(
                {
                    "step": steps[rows].astype(np.int64),
                    "layer": layers[kcols],
                    "index": idx[kcols],
                    "kind": kinds[kcols],
                    "stat": np.full(len(rows), stat, dtype=object),
                    "value": values[rows, kcols].astype(np.float64),
                }
            )
        )
    if not frames:
        return empty_frame()
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values(["step", "index", "layer"], kind="stable", ignore_index=True)
    return typed(df)


def first_nonfinite(layout: Layout, raw, written, steps) -> dict | None:
    """{"step", "layer", "what"} of the first non-finite value among these steps, or None.

    Ordered by step, then weights before activations before gradients; among weights and
    activations the shallowest, among gradients the deepest (where backward produced it
    first). A norm or a sum is non-finite iff an element is (or it overflowed float32), so
    this costs no pass over the data.
    """
    bad = ~np.isfinite(raw) & written
    bad[:, layout.param_update] = False  # NaN by definition on the first record
    if not bad.any():
        return None
    # what -> [(column, (index, priority), layer)]; the best hit of the first bad row wins
    groups: dict[str, list[tuple[int, tuple[int, int], str]]] = {"weight": [], "activation": [], "grad": []}
    for i, (name, index, _) in enumerate(layout.param_keys):
        if layout.param_weight:
            groups["weight"].append((layout.param_weight[i], (-index, 0), name))
        if layout.param_grad:
            groups["grad"].append((layout.param_grad[i], (index, 0), name))
    for pt, (name, index, _) in zip(layout.points, layout.point_keys):
        for c in (pt.sum_col, pt.norm_col, pt.count_col):
            if c >= 0:
                groups["activation"].append((c, (-index, 0), name))
        if pt.grad_col >= 0:
            # at equal depth dL/dh is computed before dL/dW
            groups["grad"].append((pt.grad_col, (index, 1), name))
    for c, (name, index, _) in zip(layout.block_input, layout.block_keys):
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
