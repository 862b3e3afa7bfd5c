"""Deferred reductions: what a recorded step's hooks collect, reduced together in step().

One of the recorder's two strategies for where reductions run (the other reduces in the
hooks: gradlab.recorder.in_hook); both take the same calls from gradlab.recorder.hooks.

On a GPU an eager training step of a small network is bound by kernel launches, not by
arithmetic, so the cost of recording is the number of kernels the hooks launch. Reducing
each probe point in its own hooks takes several launches per point (a sum, a norm, a
count, the gradient's norm); deferring them takes one per point and a few per step:

* forward hooks copy the activation sample (the first ``act_sample`` examples) into a
  tensor of its own, outside autograd: a slice and a copy, one kernel, and exact even when
  a later in-place op (a ReLU with ``inplace=True``) overwrites the output;
* gradient hooks keep a reference to dL/dh: no launch;
* ``step()`` stacks the samples of each (shape, dtype) and reduces every stack row-wise
  (each Reduction's row-wise form, gradlab.recorder.statistics: the same arithmetic as the hooks),
  takes every gradient's norm with one fused ``torch._foreach_norm`` per dtype, and writes
  the activation values into the step's row with one ``index_copy_``.

Kept gradients hold memory until step(): once they exceed ``grad_bytes`` they are reduced
on the spot. The sample copies are small with the default ``act_sample`` (16 examples);
without a sample they would copy every whole activation, so the recorder then reduces in
the hooks unless told otherwise. On a CPU the hooks' own reductions are cheaper (the data
is still in cache), so the recorder defers only on CUDA (``reduce_at``).
"""

from __future__ import annotations

import torch

from gradlab.recorder.plans import cached_plan
from gradlab.recorder.reductions import foreach_norm
from gradlab.recorder.statistics import REDUCTIONS, Reduction

__all__ = ["DeferredReductions"]

DEFAULT_GRAD_BYTES = 256 << 20


class DeferredReductions:
    """One recorded step's samples and gradients, and the columns they fill.

    ``vals``: the step's values (one 0-dim tensor per column; StepHooks resets the list in
    place), which get the gradient norms; ``first(h)``: how many leading examples of h the
    activation statistics use (None: all)."""

    derives_bn_grads = False  # a BatchNorm's dL/dx is kept like any gradient: its fused norm costs nothing
    name = "step"

    def __init__(self, device: torch.device, vals: list, first, grad_bytes: int = DEFAULT_GRAD_BYTES):
        self.device = device
        self.vals = vals
        self.first = first
        self.grad_bytes = grad_bytes
        self._plans: dict[tuple, tuple] = {}
        self.clear()

    def clear(self) -> None:
        self._samples: list[tuple[torch.Tensor, bool]] = []  # (copy, channel_first)
        self._wants: dict[int, tuple[int, Reduction]] = {}  # column -> (sample, reduction); the last call wins
        self._grads: list[tuple[torch.Tensor, list[int]]] = []
        self._held = 0
        self._norms: list[tuple[torch.Tensor, list[int]]] = []

    def output(self, seen, h: torch.Tensor, todo, channel_first: bool) -> None:
        """Columns of ``todo`` get their reductions of h's sample (copied once per tensor)."""
        if seen.sample is None:
            seen.sample = self.sample(h, self.first(h), channel_first)
        for red, col in todo:
            self._wants[col] = (seen.sample, red)

    def sample(self, h: torch.Tensor, first: int | None, channel_first: bool) -> int:
        """Keep a copy of ``h`` (of its ``first`` examples); returns its number."""
        with torch.no_grad():  # a copy outside the autograd graph, without a detach
            self._samples.append(((h if first is None else h[:first]).clone(), channel_first))
        return len(self._samples) - 1

    def grad(self, g: torch.Tensor, cols: list[int]) -> None:
        """Columns ``cols`` get ||g|| (``cols`` may still grow until step())."""
        self._grads.append((g, cols))
        self._held += g.numel() * g.element_size()
        if self._held > self.grad_bytes:
            self._reduce_grads()

    def _reduce_grads(self) -> None:
        if self._grads:
            norms = foreach_norm([g for g, _ in self._grads])
            self._norms.extend((n, cols) for n, (_, cols) in zip(norms, self._grads))
        self._grads, self._held = [], 0

    def finish(self) -> None:
        """Put the gradient norms into the step's values."""
        self._reduce_grads()
        vals = self.vals
        for n, cols in self._norms:
            for c in cols:
                vals[c] = n

    def write(self, row: torch.Tensor) -> list[int]:
        """Reduce the samples into ``row`` (float32, on the device); returns the columns set."""
        if not self._wants:
            return []
        samples = self._samples
        key = (tuple((s.shape, s.dtype, cf) for s, cf in samples), tuple(self._wants.items()))
        plan = cached_plan(self._plans, key, lambda: self._plan(samples, self._wants))
        groups, src, dst, cols = plan
        parts = []
        for members, reductions, cf in groups:
            x = torch.stack([samples[k][0] for k in members])
            parts.extend(red.rows(x, cf) for red in reductions)
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        row.index_copy_(0, dst, values.index_select(0, src))
        return cols

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
