"""Per-layer gradient norms of freshly initialized nets on one real batch.

    result = init_gradients(depths=(20, 56, 110))      # a ProbeResult
    result["ratios"]                                    # first/last conv ratio per model
    result.save("runs/probes/gradients-digits")

Each (family, depth, seed) net is built with the seed, put in training mode (BatchNorm
normalizes with batch statistics, as in the first training step) and takes one forward
and backward pass of cross-entropy on a real batch. The norms come from the recorder
(gradlab.watch), the same code that records them during training:

* grad_norm: ||dL/dW|| of each main-path conv/fc weight;
* act_grad_norm: ||dL/dh|| at each main-path conv output.

``position`` is the layer's place among main-path weighted layers (1 = the first conv,
last = the classifier); projection shortcuts do not count. Seeds are averaged with the
geometric mean, since the norms span orders of magnitude. The ratio first/last compares
the first conv layer with the last conv layer (not the classifier), as the report does.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab import families as fam
from gradlab import stat_names as S
from gradlab.along_depth import first_last_ratio, positive_logs
from gradlab.environment import describe
from gradlab.models.options import variant_text
from gradlab.models.probe_points import CONV, FC
from gradlab.recorder import watch
from gradlab.analyses.result import ProbeResult
from gradlab.analyses.sweep import Sweep

__all__ = ["KIND", "STATS", "first_last_ratios", "init_gradients", "layer_gradients", "seed_mean"]

KIND = "probe-gradients"
STATS = (S.GRAD_NORM, S.ACT_GRAD_NORM)
LAYER_COLUMNS = ["stat", "position", "kind", "layer", "value"]


def layer_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """One training-mode forward/backward of cross-entropy; the per-layer norms it gives.

    Works for any module the recorder can watch (zoo models use their probe points; others
    get every conv/linear layer, in registration order). Columns: stat, position, kind,
    layer, value. Leaves the gradients in ``model``'s parameters.
    """
    model.train()
    model.zero_grad(set_to_none=True)
    with watch(model, every=1, stats=STATS) as rec:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        rec.step(0)
        frame = rec.frame()
        points = rec.probe_points
    weighted = [p for p in points if p.kind in (CONV, FC) and p.role == "main"]
    weight_pos = {f"{p.name}.weight": (i + 1, p.kind) for i, p in enumerate(weighted)}
    conv_pos = {p.name: (i + 1, p.kind) for i, p in enumerate(weighted) if p.kind == CONV}
    parts = []
    for stat, positions in ((S.GRAD_NORM, weight_pos), (S.ACT_GRAD_NORM, conv_pos)):
        rows = frame[(frame["stat"] == stat) & frame["layer"].isin(list(positions))]
        where = rows["layer"].map(positions)
        parts.append(pd.DataFrame({
            "stat": stat,
            "position": [p for p, _ in where],
            "kind": [k for _, k in where],
            "layer": rows["layer"].to_numpy(),
            "value": rows["value"].to_numpy(dtype=np.float64),
        }))  # fmt: skip
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=LAYER_COLUMNS)
    return out.astype({"position": np.int64}).sort_values(["stat", "position"], ignore_index=True)


def seed_mean(layers: pd.DataFrame) -> pd.DataFrame:
    """Geometric mean over seeds per (family, depth, model, stat, position); n = seeds used.
    A norm that underflowed to 0 in float32 (a vanished gradient) makes the mean 0."""
    keys = ["family", "depth", "model", "stat", "position", "kind", "layer"]
    g = layers.assign(logv=positive_logs(layers["value"]), zero=layers["value"] == 0).groupby(keys, sort=True)
    out = g.agg(logv=("logv", "mean"), n=("logv", "count"), zero=("zero", "any")).reset_index()
    out["value"] = np.where(out.pop("zero"), 0.0, np.exp(out.pop("logv")))
    return out


def first_last_ratios(by_model: pd.DataFrame) -> pd.DataFrame:
    """first / last conv-layer value per (family, depth, stat): > 1 grows towards the input."""
    rows = []
    for (family, depth, model, stat), line in by_model.groupby(["family", "depth", "model", "stat"], sort=True):
        conv = line[line["kind"] == CONV].sort_values("position")
        if len(conv) < 2:
            continue
        first, last = float(conv["value"].iloc[0]), float(conv["value"].iloc[-1])
        ratio = first_last_ratio(conv)
        ratio = float("nan") if ratio is None else ratio  # non-finite ends (overflow): no ratio
        rows.append({"family": family, "depth": int(depth), "model": model, "stat": stat,
                     "first": first, "last": last, "ratio": ratio})  # fmt: skip
    return pd.DataFrame(rows, columns=["family", "depth", "model", "stat", "first", "last", "ratio"])


def init_gradients(
    depths=(20, 56, 110),
    families=fam.PAPER,
    seeds=(0, 1, 2),
    batch_size: int = 128,
    dataset: str = "digits",
    data_dir: str | None = None,
    device: str = "auto",
    progress: bool | None = None,
    model_options: dict | None = None,
) -> ProbeResult:
    """Gradient norms along depth at init for every (family, depth), averaged over seeds.

    Tables: "layers" (one row per seed and layer), "by_model" (geometric mean over seeds)
    and "ratios" (first/last conv layer per model and stat). Seed s sets both the weights
    and which examples form the batch. progress: a bar on stderr (None: only on a terminal).
    model_options: build options of every net (gradlab.models.options: norm, act, ...).
    """
    sweep = Sweep.plan(depths, families, seeds, batch_size, dataset, data_dir, device)
    start = time.perf_counter()
    parts = [layer_gradients(model, batch.x, batch.y).assign(family=family, depth=depth, model=name, seed=seed)
             for family, depth, name, seed, model, batch
             in sweep.models("probe gradients", progress, **(model_options or {}))]
    elapsed = time.perf_counter() - start
    layers = pd.concat(parts, ignore_index=True)
    layers = layers[["family", "depth", "model", "seed", *LAYER_COLUMNS]].astype({"depth": np.int64, "seed": np.int64})
    by_model = seed_mean(layers)
    settings = {
        **sweep.settings(),
        "batch_size": batch_size,
        "dataset": dataset,
        "inputs": "real",
        "mode": "train (BatchNorm with batch statistics)",
        "loss": "cross_entropy",
        "model_options": dict(model_options or {}),
        "variant": variant_text(model_options or {}),
        "elapsed_s": round(elapsed, 2),
    }
    env = describe(sweep.device)
    return ProbeResult(KIND, {"layers": layers, "by_model": by_model, "ratios": first_last_ratios(by_model)},
                       settings, env)  # fmt: skip
