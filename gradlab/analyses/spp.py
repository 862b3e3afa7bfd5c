"""Signal propagation plots (Brock, De and Smith 2021, arXiv 2101.08692) at initialization.

    result = signal_propagation(depths=(20, 56, 110), inputs="gaussian")
    result["by_model"]          # family, depth, model, block, layer, stage, stat, value
    result.save("runs/probes/spp-gaussian")

For a forward pass of one batch through a fresh net in training mode (BatchNorm with
batch statistics, as in the first training step), at every residual block output h
(after the addition and the ReLU):

* avg_channel_sq_mean: the squared mean of each channel over (N, H, W), averaged over C;
* avg_channel_var: the variance of each channel over (N, H, W), averaged over C;
* branch_avg_channel_var: avg_channel_var of the residual branch F(x) right before the
  addition (the block's ``branch_out`` point).

Plain twins have the same blocks without the addition, so the same points exist there:
their block output is relu(F(x)). With BN, a ResNet's block-output variance grows about
linearly along a stage (each block adds a unit-variance branch) and drops at stage
transitions, where the option-A shortcut subsamples and zero-pads half the channels;
a plain net's stays constant. Variances are population variances (divisor N*H*W).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from gradlab import families as fam
from gradlab.environment import describe
from gradlab.models.options import variant_text
from gradlab.errors import ModelError
from gradlab.models.probe_points import BLOCK, BRANCH
from gradlab.analyses.result import ProbeResult
from gradlab.analyses.sweep import Sweep
from gradlab.recorder.targets import resolve

__all__ = ["BRANCH_VAR", "KIND", "SQ_MEAN", "STATS", "VAR", "block_signals", "channel_stats", "signal_propagation"]

KIND = "probe-spp"
SQ_MEAN, VAR, BRANCH_VAR = "avg_channel_sq_mean", "avg_channel_var", "branch_avg_channel_var"
STATS = (SQ_MEAN, VAR, BRANCH_VAR)
BLOCK_COLUMNS = ["block", "layer", "stage", "stat", "value"]


def channel_stats(h: torch.Tensor) -> tuple[float, float]:
    """(average channel squared mean, average channel variance) of h [N, C, ...]."""
    if h.dim() < 2:
        raise ValueError(f"channel statistics need a tensor [N, C, ...], not one of shape {tuple(h.shape)}")
    h = h.detach().double().transpose(0, 1).reshape(h.shape[1], -1)  # [C, N*H*W]
    mean = h.mean(dim=1)
    var = h.var(dim=1, correction=0)
    return float(mean.square().mean()), float(var.mean())


def block_signals(model: nn.Module, x: torch.Tensor) -> pd.DataFrame:
    """The three SPP statistics at each residual block of ``model`` for one forward of x.

    ``model`` must describe its blocks (probe points of kind "block" and "branch", as every
    gradlab zoo model does). Columns: block (1 = nearest the input), layer (the block's
    name), stage (1-based, from the block's parent module), stat, value.
    """
    targets = resolve(model)
    named = dict(zip((p.name for p in targets.points), targets.modules))
    blocks = [p for p in targets.points if p.kind == BLOCK]
    branches = {p.block: p for p in targets.points if p.kind == BRANCH}
    if not blocks:
        raise ModelError(f"{type(targets.inner).__name__} lists no residual blocks in probe_points(); "
                         "signal propagation plots need a gradlab zoo model with blocks (e.g. resnet56, plain56)")
    seen: dict[str, tuple[float, float]] = {}

    def hook(name):
        def record(_module, _args, output):
            seen[name] = channel_stats(output)
        return record

    handles = [named[p.name].register_forward_hook(hook(p.name)) for p in blocks]
    handles += [named[b.name].register_forward_hook(hook(b.name)) for b in branches.values()]
    model.train()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    stages: dict[str, int] = {}
    rows = []
    for i, p in enumerate(blocks):
        stage = stages.setdefault(p.name.rpartition(".")[0], len(stages) + 1)
        sq_mean, var = seen[p.name]
        values = {SQ_MEAN: sq_mean, VAR: var}
        branch = branches.get(p.block or p.name)
        if branch is not None:
            values[BRANCH_VAR] = seen[branch.name][1]
        rows += [(i + 1, p.name, stage, stat, v) for stat, v in values.items()]
    return pd.DataFrame(rows, columns=BLOCK_COLUMNS)


def signal_propagation(
    depths=(20, 56, 110),
    families=fam.PAPER,
    seeds=(0, 1, 2),
    inputs: str = "gaussian",
    batch_size: int = 128,
    dataset: str = "digits",
    data_dir: str | None = None,
    device: str = "auto",
    zero_init_residual: bool = False,
    progress: bool | None = None,
    model_options: dict | None = None,
) -> ProbeResult:
    """SPP statistics for every (family, depth, seed); tables "spp" (per seed) and
    "by_model" (mean over seeds). inputs: "gaussian" (N(0, 1) in the dataset's image shape,
    no files needed) or "real" (a normalized training batch). Seed s sets the weights and
    the batch. progress: a bar on stderr (None: only on a terminal). model_options: build
    options of every net (gradlab.models.options: norm, act, drop_path)."""
    sweep = Sweep.plan(depths, families, seeds, batch_size, dataset, data_dir, device, inputs)
    start = time.perf_counter()
    parts = [block_signals(model, batch.x).assign(family=family, depth=depth, model=name, seed=seed)
             for family, depth, name, seed, model, batch
             in sweep.models("probe spp", progress, zero_init_residual=zero_init_residual, **(model_options or {}))]
    elapsed = time.perf_counter() - start
    spp = pd.concat(parts, ignore_index=True)
    spp = spp[["family", "depth", "model", "seed", *BLOCK_COLUMNS]].astype(
        {"depth": np.int64, "seed": np.int64, "block": np.int64, "stage": np.int64})
    keys = ["family", "depth", "model", "block", "layer", "stage", "stat"]
    by_model = spp.groupby(keys, sort=True).agg(value=("value", "mean"), n=("value", "count")).reset_index()
    settings = {
        **sweep.settings(),
        "batch_size": batch_size,
        "dataset": dataset,
        "inputs": inputs,
        "zero_init_residual": bool(zero_init_residual),
        "model_options": dict(model_options or {}),
        "variant": variant_text(model_options or {}),
        "mode": "train (BatchNorm with batch statistics)",
        "elapsed_s": round(elapsed, 2),
    }
    return ProbeResult(KIND, {"spp": spp, "by_model": by_model}, settings, describe(sweep.device))
