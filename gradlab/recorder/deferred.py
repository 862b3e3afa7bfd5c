"""Deferred reductions: what a recorded step's hooks collect, reduced together in step().

One of the recorder's strategies for where reductions run (the others reduce in the hooks,
gradlab.recorder.in_hook, or mix both by size, gradlab.recorder.mixed); all take the same
calls from gradlab.recorder.hooks.

On a GPU an eager training step of a small network is bound by kernel launches, not by
arithmetic, so the cost of recording is the number of kernels the hooks launch. Reducing
each probe point in its own hooks takes several launches per point (a sum, a norm, a
count, the gradient's norm); deferring them takes one per point and a few per step:

* forward hooks keep the activation sample (the first ``act_sample`` examples): a
  reference when the output is small and no later op changes it in place, else a copy
  outside autograd (one kernel). The first recorded step copies every sample and learns,
  from the outputs' version counters, which ones a later in-place op (a ReLU with
  ``inplace=True``) overwrites; those are copied from then on. A kept reference found
  changed at ``step()`` is dropped for that step, never recorded wrong, and copied after.
  References hold at most ``ref_bytes`` of outputs a step (64 MB): past that, copies;
* dL/dh is kept until ``step()`` (gradlab.recorder.kept_grads): no launch;
* ``step()`` stacks the samples of each (shape, dtype) and reduces every stack row-wise
  (each Reduction's row-wise form, gradlab.recorder.statistics: the same arithmetic as the
  hooks), stacks the gradients of each shape and takes their norms row-wise, and writes the
  values into the step's row with one ``index_copy_`` for the activations and one for the
  gradients: a few kernels a step however many points.

On a CPU, where the fused kernels are on, ``step()`` reads each kept sample where it lies
instead of stacking it (gradlab.recorder.fused_tensors): one call for every sum, norm and
count of the step.

Kept gradients hold memory until step(): once they exceed ``grad_bytes`` they are reduced
on the spot. Without a sample the recorder would keep or copy every whole activation, so
on CUDA it then mixes (small tensors deferred) unless told otherwise. On a CPU a large
tensor's reductions cost least in its hook (the data is still in cache), a small one's at
step(): the CPU default mixes (``reduce_at``).
"""

from __future__ import annotations

import numpy as np
import torch

from gradlab.recorder import fused_tensors
from gradlab.recorder.fast_step import FastStep
from gradlab.recorder.kept_grads import DEFAULT_GRAD_BYTES, KeptGradients
from gradlab.recorder.plans import cached_plan
from gradlab.recorder.stack_buffers import StackBuffers
from gradlab.recorder.statistics import COUNT, NORM, REDUCTIONS, SUM

__all__ = ["DeferredReductions"]

DEFAULT_REF_BYTES = 64 << 20


class DeferredReductions:
    """One recorded step's samples and gradients, and the columns they fill.

    ``vals``: the step's values (one 0-dim tensor per column; StepHooks resets the list in
    place); ``first(h)``: how many leading examples of h the activation statistics use (None:
    all). ``ref_bytes``: at most this much of a step's outputs is kept by reference, the rest
    copied (see the module doc)."""

    derives_bn_grads = False  # a BatchNorm's dL/dx is kept like any gradient: its norm costs no launch of its own
    name = "step"

    def __init__(self, device: torch.device, vals: list, first, grad_bytes: int = DEFAULT_GRAD_BYTES,
                 ref_bytes: int = DEFAULT_REF_BYTES):  # fmt: skip
        self.device = device
        self.vals = vals
        self.first = first
        self.grads = KeptGradients(device, grad_bytes)
        self.fast = FastStep(device)  # what the lean hooks kept (gradlab.recorder.fast_taps)
        self.ref_bytes = ref_bytes
        self.buffers = StackBuffers()  # the samples' stacks, kept from step to step
        self._plans: dict[tuple, tuple] = {}
        self._fused_plans: dict[tuple, tuple] = {}  # () where the step needs a reduction the kernel lacks
        self._copied: set[int] = set()  # outputs (by their first column) that a later op changes in place
        self._learned = False  # a step was recorded: what is changed in place is known
        self.clear()

    def clear(self) -> None:
        self._samples: list[torch.Tensor] = []  # an output (by reference) or a copy of its sample
        self._firsts: list[int | None] = []  # of a reference: how many leading examples are its sample
        self._origins: list[tuple[torch.Tensor, int, int, bool]] = []  # (output, its version, key, copied)
        self._metas: list[tuple] = []  # (shape, dtype, channel_first) of each sample
        self._wants: list[tuple[int, tuple]] = []  # (sample, todo) in call order: for a column, the last wins
        self._kept = 0  # bytes of the outputs kept by reference
        self.grads.clear()
        self.fast.clear()

    def _take_fast(self) -> None:
        """The lean hooks' entries into the lists below, in their call order (a general call
        comes next, or the step is not one the fast path takes: gradlab.recorder.fast_step)."""
        for plan, h, version in self.fast.take():
            if plan.todo:
                self._wants.append((len(self._samples), plan.todo))
                self._samples.append(h)
                self._firsts.append(plan.first)
                self._metas.append(plan.meta)
                self._origins.append((h, version, plan.key, False))
            if plan.grad_cols is not None:
                self.grads.adopt(h, version, plan.grad_cols, plan.grad_key)

    def output(self, seen, h: torch.Tensor, todo, channel_first: bool) -> None:
        """Columns of ``todo`` get their reductions of h's sample (kept once per tensor)."""
        if self.fast.entries:
            self._take_fast()
        k = seen.sample
        if k is None:
            k = seen.sample = self.sample(h, self.first(h), channel_first, todo[0][1])
        self._wants.append((k, todo))

    def sample(self, h: torch.Tensor, first: int | None, channel_first: bool, key: int) -> int:
        """Keep ``h`` (its ``first`` examples) for step(): a reference when it is small and no
        later op changes it in place, else a copy; returns its number. ``key``: the point's."""
        size = h.numel() * h.element_size()
        copy = not self._learned or key in self._copied or self._kept + size > self.ref_bytes
        if copy:
            with torch.no_grad():  # (outside the autograd graph, without a detach)
                s = (h if first is None else h[:first]).clone()
            shape, first = s.shape, None
        else:
            self._kept += size
            s, shape = h, h.shape if first is None else (first, *h.shape[1:])
        self._samples.append(s)
        self._firsts.append(first)
        self._metas.append((shape, h.dtype, channel_first))
        self._origins.append((h, h._version, key, copy))
        return len(self._samples) - 1

    def grad(self, g: torch.Tensor, cols: list[int]) -> None:
        """Columns ``cols`` get ||g|| (``cols`` may still grow until step())."""
        if self.fast.entries:
            self._take_fast()
        self.grads.grad(g, cols)

    def retain(self, h: torch.Tensor, cols: list[int], key: int) -> bool:
        """Keep h to read dL/dh at step() (gradlab.recorder.kept_grads); False: hook it instead."""
        if self.fast.entries:
            self._take_fast()
        return self.grads.retain(h, cols, key)

    def finish(self) -> None:
        """Reduce what is left of the gradients; drop the samples a later op changed in place."""
        if self.fast.entries and (self._origins or self.grads.holds or not self.fast.finish()):
            self._take_fast()
        self.grads.finish()
        changed = {k for k, (h, version, _, copied) in enumerate(self._origins) if not copied and h._version != version}
        for h, version, key, _ in self._origins:
            if h._version != version:
                self._copied.add(key)  # copied from the next step on
        if changed:  # a kept output changed since: its values of this step are not known
            self._wants = [w for w in self._wants if w[0] not in changed]
        self._learned = True

    def write(self, row: torch.Tensor) -> list[int]:
        """Reduce the samples and put the gradient norms into ``row`` (float32, on the device);
        returns the columns set."""
        cols = self.grads.write(row) + self.fast.write(row)
        if not self._wants:
            return cols
        key = (tuple(self._metas), tuple((k, todo[0][1]) for k, todo in self._wants))
        if self.device.type == "cpu":
            fused = self._write_fused(row, key)
            if fused is not None:
                return cols + fused
        groups, src, dst, act_cols = cached_plan(self._plans, key, lambda: self._plan(self._metas, self._wants))
        samples, firsts, parts = self._samples, self._firsts, []
        with torch.no_grad():
            for members, reductions, cf in groups:
                x = self.buffers.stack([samples[k] if firsts[k] is None else samples[k][: firsts[k]] for k in members])
                parts.extend(red.rows(x, cf) for red in reductions)
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        row.index_copy_(0, dst, values.index_select(0, src))
        return cols + act_cols

    def _write_fused(self, row: torch.Tensor, key) -> list[int] | None:
        """Every sample's reductions in one call of the fused kernel, into ``row``; returns the
        columns set, or None (nothing written) where the kernel cannot take this step."""
        plan = cached_plan(self._fused_plans, key, lambda: self._fused_plan(self._metas, self._wants))
        if not plan:
            return None
        numel, wanted, src, dst, act_cols = plan
        values = fused_tensors.stats(self._samples, numel, wanted)
        if values is None:
            return None
        row.index_copy_(0, dst, values.view(-1).index_select(0, src))
        return act_cols

    def _fused_plan(self, metas: list[tuple], wants: list[tuple[int, tuple]]) -> tuple:
        """(each sample's elements, which of sum/norm/count are wanted, positions in the
        kernel's [3, k] result -> row columns), or () when a reduction or dtype needs the
        PyTorch path."""
        order = (SUM, NORM, COUNT)
        by_col = _by_column(wants)
        if any(red not in order for _, red in by_col.values()) or any(dtype != torch.float32 for _, dtype, _ in metas):
            return ()
        k = len(metas)
        numel = np.asarray([int(np.prod(shape, dtype=np.int64)) for shape, _, _ in metas], dtype=np.int64)
        wanted = tuple(any(red is r for _, red in by_col.values()) for r in order)
        src = [order.index(red) * k + i for i, red in by_col.values()]
        cols = list(by_col)
        as_index = lambda v: torch.tensor(v, dtype=torch.long, device=self.device)  # noqa: E731
        return numel, wanted, as_index(src), as_index(cols), cols

    def _plan(self, metas: list[tuple], wants: list[tuple[int, tuple]]) -> tuple:
        """Groups of same-(shape, dtype, layout) samples with the reductions each needs, and
        where each reduced value goes: positions in the concatenated results -> row columns."""
        by_col = _by_column(wants)
        by_shape: dict[tuple, list[int]] = {}
        for k, meta in enumerate(metas):
            by_shape.setdefault(meta, []).append(k)
        needed: dict[int, set] = {}
        for k, red in by_col.values():
            needed.setdefault(k, set()).add(red)
        groups, position, offset = [], {}, 0
        for (_, _, cf), members in by_shape.items():
            reductions = [r for r in REDUCTIONS if any(r in needed.get(k, ()) for k in members)]
            if not reductions:
                continue
            groups.append((members, reductions, cf))
            for r in reductions:
                for i, k in enumerate(members):
                    position[(k, r)] = offset + i
                offset += len(members)
        src = [position[w] for w in by_col.values()]
        cols = list(by_col)
        as_index = lambda v: torch.tensor(v, dtype=torch.long, device=self.device)  # noqa: E731
        return groups, as_index(src), as_index(cols), cols


def _by_column(wants: list[tuple[int, tuple]]) -> dict[int, tuple]:
    """Column -> (sample, reduction) of the step's requests; for a column asked twice, the last call wins."""
    return {col: (k, red) for k, todo in wants for red, col in todo}
