"""Deferred reductions: what a recorded step's hooks collect, reduced together in step().

One of the recorder's two strategies for where reductions run (the other reduces in the
hooks: gradlab.recorder.in_hook); both take the same calls from gradlab.recorder.hooks.

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
* gradient hooks keep a reference to dL/dh: no launch;
* ``step()`` stacks the samples of each (shape, dtype) and reduces every stack row-wise
  (each Reduction's row-wise form, gradlab.recorder.statistics: the same arithmetic as the
  hooks), stacks the gradients of each shape and takes their norms row-wise, and writes the
  values into the step's row with one ``index_copy_`` for the activations and one for the
  gradients: a few kernels a step however many points.

Kept gradients hold memory until step(): once they exceed ``grad_bytes`` they are reduced
on the spot. Without a sample the recorder would keep or copy every whole activation, so
it then reduces in the hooks unless told otherwise. On a CPU the hooks' own reductions
cost as little or less (the data is still in cache), so the recorder defers only on CUDA
(``reduce_at``).
"""

from __future__ import annotations

import torch

from gradlab.recorder.plans import cached_plan
from gradlab.recorder.reductions import norm
from gradlab.recorder.statistics import REDUCTIONS, Reduction

__all__ = ["DeferredReductions"]

DEFAULT_GRAD_BYTES = 256 << 20
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
        self.grad_bytes = grad_bytes
        self.ref_bytes = ref_bytes
        self._plans: dict[tuple, tuple] = {}
        self._copied: set[int] = set()  # outputs (by their first column) that a later op changes in place
        self._learned = False  # a step was recorded: what is changed in place is known
        self.clear()

    def clear(self) -> None:
        self._samples: list[tuple[torch.Tensor, bool]] = []  # (its sample, channel_first)
        self._origins: list[tuple[torch.Tensor, int, int, bool]] = []  # (output, its version, key, copied)
        self._kept = 0  # bytes of the outputs kept by reference
        self._wants: dict[int, tuple[int, Reduction]] = {}  # column -> (sample, reduction); the last call wins
        self._grads: list[tuple[torch.Tensor, list[int]]] = []
        self._held = 0
        self._norms: list[tuple[torch.Tensor, list[list[int]]]] = []  # (norms of a group, their columns)

    def output(self, seen, h: torch.Tensor, todo, channel_first: bool) -> None:
        """Columns of ``todo`` get their reductions of h's sample (kept once per tensor)."""
        if seen.sample is None:
            seen.sample = self.sample(h, self.first(h), channel_first, todo[0][1])
        for red, col in todo:
            self._wants[col] = (seen.sample, red)

    def sample(self, h: torch.Tensor, first: int | None, channel_first: bool, key: int) -> int:
        """Keep ``h`` (its ``first`` examples) for step(): a reference when it is small and no
        later op changes it in place, else a copy; returns its number. ``key``: the point's."""
        size = h.numel() * h.element_size()
        copy = not self._learned or key in self._copied or self._kept + size > self.ref_bytes
        with torch.no_grad():  # (outside the autograd graph, without a detach)
            s = h if first is None else h[:first]
            s = s.clone() if copy else s
        if not copy:
            self._kept += size
        self._samples.append((s, channel_first))
        self._origins.append((h, h._version, key, copy))
        return len(self._samples) - 1

    def grad(self, g: torch.Tensor, cols: list[int]) -> None:
        """Columns ``cols`` get ||g|| (``cols`` may still grow until step())."""
        self._grads.append((g, cols))
        self._held += g.numel() * g.element_size()
        if self._held > self.grad_bytes:
            self._reduce_grads()

    def _reduce_grads(self) -> None:
        """The norms of the gradients kept so far, a stack per shape: few kernels however many."""
        by_shape: dict[tuple, list[int]] = {}
        for i, (g, _) in enumerate(self._grads):
            by_shape.setdefault((g.shape, g.dtype), []).append(i)
        for members in by_shape.values():
            stacked = torch.stack([self._grads[i][0] for i in members])
            self._norms.append((norm(stacked, dim=tuple(range(1, stacked.dim()))) if stacked.dim() > 1 else
                                norm(stacked.unsqueeze(1), dim=(1,)), [self._grads[i][1] for i in members]))
        self._grads, self._held = [], 0

    def finish(self) -> None:
        """Reduce what is left of the gradients; drop the samples a later op changed in place."""
        self._reduce_grads()
        changed = {k for k, (h, version, _, copied) in enumerate(self._origins) if not copied and h._version != version}
        for h, version, key, _ in self._origins:
            if h._version != version:
                self._copied.add(key)  # copied from the next step on
        if changed:  # a kept output changed since: its values of this step are not known
            self._wants = {c: w for c, w in self._wants.items() if w[0] not in changed}
        self._learned = True

    def write(self, row: torch.Tensor) -> list[int]:
        """Reduce the samples and put the gradient norms into ``row`` (float32, on the device);
        returns the columns set."""
        cols = self._write_gradients(row)
        if not self._wants:
            return cols
        samples = self._samples
        key = (tuple((s.shape, s.dtype, cf) for s, cf in samples), tuple(self._wants.items()))
        plan = cached_plan(self._plans, key, lambda: self._plan(samples, self._wants))
        groups, src, dst, act_cols = plan
        parts = []
        with torch.no_grad():
            for members, reductions, cf in groups:
                x = torch.stack([samples[k][0] for k in members])
                parts.extend(red.rows(x, cf) for red in reductions)
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        row.index_copy_(0, dst, values.index_select(0, src))
        return cols + act_cols

    def _write_gradients(self, row: torch.Tensor) -> list[int]:
        if not self._norms:
            return []
        key = tuple((n.shape[0], tuple(map(tuple, c))) for n, c in self._norms)
        src, dst, cols = cached_plan(self._plans, ("grads", key), lambda: self._grad_plan(self._norms))
        norms = torch.cat([n for n, _ in self._norms]) if len(self._norms) > 1 else self._norms[0][0]
        row.index_copy_(0, dst, norms.index_select(0, src))
        return cols

    def _grad_plan(self, norms: list) -> tuple:
        """Positions in the concatenated norms -> row columns (a gradient may fill several)."""
        src, dst, offset = [], [], 0
        for n, columns in norms:
            for i, cs in enumerate(columns):
                src += [offset + i] * len(cs)
                dst += cs
            offset += n.shape[0]
        last = {c: s for s, c in zip(src, dst)}  # a column written twice (a second micro-batch): the last wins
        as_index = lambda v: torch.tensor(v, dtype=torch.long, device=self.device)  # noqa: E731
        return as_index(list(last.values())), as_index(list(last)), list(last)

    def _plan(self, samples: list, wants: dict[int, tuple[int, Reduction]]) -> tuple:
        """Groups of same-(shape, dtype, layout) samples with the reductions each needs, and
        where each reduced value goes: positions in the concatenated results -> row columns."""
        by_shape: dict[tuple, list[int]] = {}
        for k, (s, cf) in enumerate(samples):
            by_shape.setdefault((s.shape, s.dtype, cf), []).append(k)
        needed: dict[int, set] = {}
        for k, red in wants.values():
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
        src = [position[w] for w in wants.values()]
        cols = list(wants)
        as_index = lambda v: torch.tensor(v, dtype=torch.long, device=self.device)  # noqa: E731
        return groups, as_index(src), as_index(cols), cols
