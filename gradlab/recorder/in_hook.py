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

import math

import numpy as np
import torch

from gradlab.recorder import fused_tensors, native
from gradlab.recorder.reductions import COUNT_UNIT, norm
from gradlab.recorder.statistics import COUNT, NORM, SUM

__all__ = ["FUSED_VALUES", "InHookReductions"]

FUSED_VALUES = {SUM: 0, NORM: 1, COUNT: 2}  # what the fused kernel gives, at its position


class InHookReductions:
    """Reduces at once into the step's values (``vals``: one 0-dim tensor per column; on a
    CPU, ``host``: one float32 per column).

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
        # on a CPU: sums, norms and counts from one kernel call, kept on the host (no tensor
        # per value) and put into the row at write()
        self.fused = fused
        self.host = np.full(len(vals), np.nan, dtype=np.float32)  # the step's values so taken, by column
        self.host_cols: list[int] = []  # the columns so taken this step
        self.got = np.zeros(3, dtype=np.float32)  # (the kernel's sum, norm, count)
        self.got_at = self.got.ctypes.data
        lib = native.library() if fused else None
        self._kernel = None if lib is None else lib.one_stats

    def output(self, seen, h: torch.Tensor, todo, channel_first: bool) -> None:
        """Reduce output ``h`` for each (reduction, column) of ``todo``."""
        cache, vals, d = seen.values, self.vals, None
        if self.fused and all(red in FUSED_VALUES for red, _ in todo) and self._fused_output(cache, h, todo):
            return
        for red, col in todo:
            v = cache.get(red)
            if v is None:
                if d is None:
                    d = self.sample(h.detach())  # reductions must not extend the autograd graph
                v = cache[red] = red.whole(d, self.scratch, channel_first)
            elif type(v) is int:  # the fused kernel's, on the host
                self.host[col] = self.host[v]
                self.host_cols.append(col)
                continue
            vals[col] = v

    def _fused_output(self, cache: dict, h: torch.Tensor, todo) -> bool:
        """``output()`` by the fused kernel, into ``host``; a cached value is the column that
        holds it there (or a tensor the PyTorch path made). False: h does not qualify."""
        host, got = self.host, self.got
        fresh = any(red not in cache for red, _ in todo)
        if fresh and not fused_tensors.in_hook(self.sample(h.detach()), self.got_at):
            return False
        for red, col in todo:
            v = cache.get(red)
            if v is None:
                host[col] = got[FUSED_VALUES[red]]
                cache[red] = col
            elif type(v) is int:
                host[col] = host[v]
            else:
                self.vals[col] = v
                continue
            self.host_cols.append(col)
        return True

    def kernel_into_host(self, t: torch.Tensor, n: int, cols: list[tuple[int, int]]) -> None:
        """The fused kernel's sum, norm and count of t's first ``n`` elements into the host
        columns ``cols`` ((column, position in FUSED_VALUES) pairs), as :meth:`output` puts
        them; for a caller that has checked t qualifies (gradlab.recorder.fused_taps)."""
        self._kernel(t.data_ptr(), n, self.got_at, COUNT_UNIT, torch.get_num_threads())
        host, got = self.host, self.got
        for col, i in cols:
            host[col] = got[i]
            self.host_cols.append(col)

    def grad(self, g: torch.Tensor, cols: list[int]) -> None:
        """||g|| into ``cols`` (``g`` outside autograd); a column a step's earlier micro-batch
        wrote gets the norm over both, sqrt(a^2 + b^2): the step's whole batch."""
        if self.fused:  # (a CPU: the fused kernel's norm, PyTorch's where g does not qualify, on the host)
            store, hypot = self.host, math.hypot
            v = float(self.got[1]) if fused_tensors.in_hook(g, self.got_at) else norm(g).item()
        else:
            store, hypot, v = self.vals, torch.hypot, norm(g)
        done = self._grad_cols
        for c in cols:
            if c in done:
                store[c] = hypot(store[c], v)
            else:
                store[c] = v
                done.add(c)
                if self.fused:
                    self.host_cols.append(c)

    def retain(self, h: torch.Tensor, cols: list[int], key: int) -> bool:
        """(Gradients are reduced in their hooks: none is kept.)"""
        return False

    def finish(self) -> None:
        """(Nothing is left to reduce at step().)"""

    def write(self, row: torch.Tensor) -> list[int]:
        """Put the values the fused kernel gave into ``row`` (a CPU tensor); returns their columns."""
        cols = self.host_cols
        if cols:
            row.numpy()[cols] = self.host[cols]
        return cols

    def clear(self) -> None:
        """Forget which columns this step wrote (nothing else is held between steps)."""
        self._grad_cols.clear()
        self.host_cols.clear()  # (in place: the lean hooks hold the list)
