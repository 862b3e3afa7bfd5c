"""Index tensors a recorded step's batched derivation needs, built once per step layout.

The step-time writers (gradlab.recorder.deferred, bn_stats, bn_grads) gather what the hooks
queued and scatter the results into the step's row with index tensors that depend only on
the step's layout (which tensors, their shapes, their columns). A layout recurs every
recorded step, so its plan is built once; a new batch size or input shape adds one.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["MAX_PLANS", "cached_plan", "column_slots", "put_norms"]

MAX_PLANS = 16  # distinct step layouts kept; past that the cache starts over


def cached_plan(plans: dict, key, make: Callable[[], tuple]) -> tuple:
    """``plans[key]``, built by ``make()`` the first time (``plans`` holds at most MAX_PLANS)."""
    plan = plans.get(key)
    if plan is None:
        if len(plans) >= MAX_PLANS:
            plans.clear()
        plan = plans[key] = make()
    return plan


def column_slots(dst: list[int]) -> tuple[list[int], list[int] | None]:
    """The columns ``dst`` names, each once in order, and for each entry of ``dst`` its
    column's place among them; None when no column is named twice (the usual step: a
    column named twice is filled by several micro-batches)."""
    cols = list(dict.fromkeys(dst))
    if len(cols) == len(dst):
        return dst, None
    where = {c: i for i, c in enumerate(cols)}
    return cols, [where[c] for c in dst]


def put_norms(row: torch.Tensor, dst: torch.Tensor, norms: torch.Tensor, slot: torch.Tensor | None) -> None:
    """``norms`` into ``row`` at the columns ``dst``; with ``slot`` (column_slots), a column
    several norms fill gets the norm over all of them, sqrt(a^2 + b^2 + ...), taken with
    each column scaled by its largest so that the squares of tiny norms (vanishing
    gradients, ~1e-20) do not underflow float32."""
    if slot is None:
        row.index_copy_(0, dst, norms)
        return
    largest = torch.zeros(len(dst), dtype=norms.dtype, device=norms.device)
    largest.scatter_reduce_(0, slot, norms, "amax")
    scale = largest.index_select(0, slot).clamp_min_(torch.finfo(norms.dtype).tiny)
    total = torch.zeros_like(largest).index_add_(0, slot, norms.div(scale).square_()).sqrt_().mul_(largest)
    row.index_copy_(0, dst, torch.where(torch.isinf(largest), largest, total))  # (an infinite one: inf, not inf/inf)
