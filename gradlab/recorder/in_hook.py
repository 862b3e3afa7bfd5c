"""Reductions in the hooks: each output is reduced in its forward hook, each gradient in its
gradient hook, while the data is still in cache (on a CPU, for tensors too large to keep:
gradlab.recorder.mixed).

One of the recorder's strategies for where reductions run; another defers them to
``step()`` and batches them (gradlab.recorder.deferred). All take the same calls from
gradlab.recorder.hooks and do the same arithmetic (gradlab.recorder.reductions), so they
record the same values. A tensor several points see (a BatchNorm output and the
``branch_out`` after it, a block output and the next block's input) is reduced once per
reduction: the results are cached on its SeenOutput.
"""

from __future__ import annotations

import torch

from gradlab.recorder import fused_tensors
from gradlab.recorder.reductions import norm
from gradlab.recorder.statistics import COUNT, NORM, SUM

__all__ = ["InHookReductions"]

_FUSED = {SUM: 0, NORM: 1, COUNT: 2}  # what the fused kernel gives, at its position


class InHookReductions:
    """Reduces at once into the step's values (``vals``: one 0-dim tensor per column).

    ``sample(h)``: the leading examples the activation statistics use (a view);
    ``scratch(t)``: a reused buffer shaped like t for a reduction's elementwise pass.
    """

    derives_bn_grads = True  # a BatchNorm's two gradient norms come from one pass over dL/dy
    name = "hooks"

    def __init__(self, vals: list, sample, scratch, fused: bool = False):
        self.vals = vals  # the step's values (StepHooks resets the list in place)
        self.sample = sample
        self.scratch = scratch
        self._grad_cols: set[int] = set()  # gradient columns written this step
        self.fused = fused  # sum, norm and count in one kernel call where the tensor allows (CPU)

    def output(self, seen, h: torch.Tensor, todo, channel_first: bool) -> None:
        """Reduce output ``h`` for each (reduction, column) of ``todo``."""
        cache, vals, d = seen.values, self.vals, None
        if self.fused and all(red in _FUSED for red, _ in todo) and any(red not in cache for red, _ in todo):
            d = self.sample(h.detach())
            values = fused_tensors.in_hook(d)
            if values is not None:
                values = values.unbind()
                for red, col in todo:
                    v = cache.get(red)
                    vals[col] = cache[red] = values[_FUSED[red]] if v is None else v
                return
        for red, col in todo:
            v = cache.get(red)
            if v is None:
                if d is None:
                    d = self.sample(h.detach())  # reductions must not extend the autograd graph
                v = cache[red] = red.whole(d, self.scratch, channel_first)
            vals[col] = v

    def grad(self, g: torch.Tensor, cols: list[int]) -> None:
        """||g|| into ``cols`` (``g`` outside autograd); a column a step's earlier micro-batch
        wrote gets the norm over both, sqrt(a^2 + b^2): the step's whole batch."""
        v = norm(g)
        vals, done = self.vals, self._grad_cols
        for c in cols:
            if c in done:
                vals[c] = torch.hypot(vals[c], v)
            else:
                vals[c] = v
                done.add(c)

    def retain(self, h: torch.Tensor, cols: list[int], key: int) -> bool:
        """(Gradients are reduced in their hooks: none is kept.)"""
        return False

    def finish(self) -> None:
        """(Nothing is left to reduce at step().)"""

    def write(self, row: torch.Tensor) -> list[int]:
        return []

    def clear(self) -> None:
        """Forget which gradient columns this step wrote (nothing else is held between steps)."""
        self._grad_cols.clear()
