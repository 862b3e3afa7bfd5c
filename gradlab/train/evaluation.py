"""Evaluations: error rates on the held-out sets and the metrics row of each evaluation.

Evaluation runs the model in eval mode (BatchNorm's running statistics) in batches of
gradlab.data.loader.EVAL_BATCH; data-parallel, each rank takes its contiguous part of a
set and the counts are summed, so the rate is the whole set's.
"""

from __future__ import annotations

import contextlib

import torch

from gradlab.distributed import World
from gradlab.train.parts import RunParts

__all__ = ["autocast", "error_rate", "metrics_row"]


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the trainer's mixed precision); nothing on a CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@torch.no_grad()
def error_rate(parts: RunParts, world: World, device: torch.device, x_all: torch.Tensor,
               y_all: torch.Tensor) -> float:  # fmt: skip
    """The model's error rate on one set."""
    n = len(y_all)
    if world.enabled:
        part = world.shard(n)
        x_all, y_all = x_all[part], y_all[part]
    parts.model.eval()
    wrong = torch.zeros((), device=device)
    for xb, yb in parts.loader.eval_batches(x_all, y_all):
        with autocast(device):
            wrong += (parts.forward(xb).argmax(1) != yb).sum()
    parts.model.train()
    return float(world.sum_(wrong)) / n


def metrics_row(step: int, parts: RunParts, world: World, device: torch.device, train_stats: dict | None,
                images_per_s: float, time_s: float) -> dict:  # fmt: skip
    """metrics.parquet's row after ``step`` steps (``train_stats``: the running sums since the
    last evaluation, None at step 0)."""
    count, sets = train_stats["count"] if train_stats else 0, parts.eval_sets
    return {
        "step": step,
        "epoch": parts.loader.epoch_of(step),
        "lr": parts.lr.lr(max(step - 1, 0)),
        "train_loss": train_stats["loss_sum"] / count if count else float("nan"),
        "train_err": train_stats["err_sum"] / count if count else float("nan"),
        "test_err": error_rate(parts, world, device, *sets["test"]),
        "val_err": error_rate(parts, world, device, *sets["val"]) if "val" in sets else float("nan"),
        "images_per_s": images_per_s,
        "time_s": time_s,
    }
