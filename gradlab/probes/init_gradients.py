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

import sys
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab import stat_names as S
from gradlab.compare import FAMILIES, model_name
from gradlab.environment import describe, resolve_device
from gradlab.errors import ConfigError
from gradlab.models import build
from gradlab.models.probe_points import CONV, FC
from gradlab.probes.init_inputs import probe_batch
from gradlab.probes.recorder import watch
from gradlab.probes.result import ProbeResult

__all__ = ["KIND", "STATS", "check_families", "check_seeds", "first_last_ratios", "init_gradients", "layer_gradients",
           "seed_mean"]

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
    """Geometric mean over seeds per (family, depth, model, stat, position); n = seeds used."""
    v = layers["value"].to_numpy(dtype=float)
    ok = np.isfinite(v) & (v > 0)
    logv = np.where(ok, np.log(np.where(ok, v, 1.0)), np.nan)
    keys = ["family", "depth", "model", "stat", "position", "kind", "layer"]
    g = layers.assign(logv=logv).groupby(keys, sort=True)
    out = g.agg(logv=("logv", "mean"), n=("logv", "count")).reset_index()
    out["value"] = np.exp(out.pop("logv"))
    return out


def first_last_ratios(by_model: pd.DataFrame) -> pd.DataFrame:
    """first / last conv-layer value per (family, depth, stat): > 1 grows towards the input."""
    rows = []
    for (family, depth, model, stat), line in by_model.groupby(["family", "depth", "model", "stat"], sort=True):
        conv = line[line["kind"] == CONV].sort_values("position")
        if len(conv) < 2:
            continue
        first, last = float(conv["value"].iloc[0]), float(conv["value"].iloc[-1])
        ratio = first / last if last > 0 else float("nan")
        rows.append({"family": family, "depth": int(depth), "model": model, "stat": stat,
                     "first": first, "last": last, "ratio": ratio})  # fmt: skip
    return pd.DataFrame(rows, columns=["family", "depth", "model", "stat", "first", "last", "ratio"])


def check_seeds(seeds) -> tuple[int, ...]:
    """Seeds as a tuple; a clear ConfigError before any work for junk (also used by spp)."""
    seeds = tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"seeds must be whole numbers >= 0, e.g. 0,1,2; got {', '.join(map(str, seeds)) or 'none'}")
    return seeds


def check_families(families) -> tuple[str, ...]:
    """Families as a tuple of "plain"/"resnet"; a clear ConfigError otherwise."""
    families = tuple(families)
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise ConfigError(f"families: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(FAMILIES)}")
    return families


def init_gradients(
    depths=(20, 56, 110),
    families=FAMILIES,
    seeds=(0, 1, 2),
    batch_size: int = 128,
    dataset: str = "digits",
    data_dir: str | None = None,
    device: str = "auto",
    progress: bool | None = None,
) -> ProbeResult:
    """Gradient norms along depth at init for every (family, depth), averaged over seeds.

    Tables: "layers" (one row per seed and layer), "by_model" (geometric mean over seeds)
    and "ratios" (first/last conv layer per model and stat). Seed s sets both the weights
    and which examples form the batch. progress: a bar on stderr (None: only on a terminal).
    """
    families = check_families(families)
    seeds = check_seeds(seeds)
    names = {(f, int(d)): model_name(f, int(d)) for d in depths for f in families}  # validates depths first
    dev = resolve_device(device)
    batches = {s: probe_batch(dataset, batch_size, seed=s, data_dir=data_dir, device=dev) for s in seeds}
    todo = [(f, d, s) for (f, d) in sorted(names, key=lambda k: (k[1], k[0])) for s in seeds]
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="probe gradients", unit="net", leave=False, dynamic_ncols=True,
                   file=sys.stderr)  # fmt: skip
    start = time.perf_counter()
    parts = []
    try:
        for family, depth, seed in todo:
            batch = batches[seed]
            torch.manual_seed(seed)
            model = build(names[family, depth], num_classes=batch.num_classes, in_channels=batch.in_channels).to(dev)
            part = layer_gradients(model, batch.x, batch.y)
            parts.append(part.assign(family=family, depth=depth, model=names[family, depth], seed=seed))
            del model
            if bar is not None:
                bar.set_postfix_str(f"{names[family, depth]} s{seed}")
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    layers = pd.concat(parts, ignore_index=True)
    layers = layers[["family", "depth", "model", "seed", *LAYER_COLUMNS]].astype({"depth": np.int64, "seed": np.int64})
    by_model = seed_mean(layers)
    settings = {
        "depths": sorted({int(d) for d in depths}),
        "families": list(families),
        "seeds": list(seeds),
        "batch_size": batch_size,
        "dataset": dataset,
        "inputs": "real",
        "mode": "train (BatchNorm with batch statistics)",
        "loss": "cross_entropy",
        "elapsed_s": round(elapsed, 2),
    }
    env = describe(dev)
    return ProbeResult(KIND, {"layers": layers, "by_model": by_model, "ratios": first_last_ratios(by_model)},
                       settings, env)  # fmt: skip
