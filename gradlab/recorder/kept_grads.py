"""Gradients dL/dh kept until ``step()`` and reduced there, a stack per shape.

The deferred half of the recorder (gradlab.recorder.deferred) takes ||dL/dh|| here. A
gradient arrives in one of two ways:

* ``grad(g, cols)``: a hook on h's autograd node handed dL/dh over (a reference, no copy);
* ``retain(h, cols, key)``: h itself is kept and asked to keep its gradient
  (``Tensor.retain_grad``, which autograd fills in C++), read as ``h.grad`` at ``step()``.
  Registering a Python hook on a node costs several times more than ``retain_grad`` on a
  CPU, and calling it in the backward pass costs a Python call per point; so small
  tensors are retained. ``retain_grad`` follows an in-place change of h (its ``.grad``
  would be that of the changed tensor), so the first recorded step uses hooks and learns,
  from version counters, which outputs a later op changes in place: those keep the hook.
  A retained gradient found changed at ``step()`` is dropped for that step, never recorded
  wrong. The output keeps its ``.grad`` as after any ``retain_grad``: it goes with the
  output, and clearing it could take the gradient from a caller who retained it too.

On a CPU the norms are taken by one call of the fused kernel where the gradients allow
(gradlab.recorder.fused_tensors), without stacking them.

Kept gradients hold memory until ``step()``: past ``grad_bytes`` they are reduced on the
spot, and past ``retain_numel`` elements a tensor is not retained.
"""

from __future__ import annotations

import torch

from gradlab.recorder import fused_tensors
from gradlab.recorder.plans import cached_plan, column_slots, put_norms
from gradlab.recorder.reductions import row_norms
from gradlab.recorder.stack_buffers import StackBuffers

__all__ = ["DEFAULT_GRAD_BYTES", "KeptGradients"]

DEFAULT_GRAD_BYTES = 256 << 20
RETAIN_NUMEL = 1 << 14


class KeptGradients:
    """A recorded step's gradients, their norms (a stack per shape) and the columns they fill."""

    def __init__(self, device: torch.device, grad_bytes: int = DEFAULT_GRAD_BYTES, retain_numel: int = RETAIN_NUMEL):
        self.device = device
        self.grad_bytes = grad_bytes
        self.retain_numel = retain_numel
        self._plans: dict[tuple, tuple] = {}
        self.buffers = StackBuffers()
        self._in_place: set[int] = set()  # points (by key) whose output a later op changes in place
        self._learned = False  # a step was recorded: what is changed in place is known
        self.clear()

    def clear(self) -> None:
        self._grads: list[tuple[torch.Tensor, list[int]]] = []
        self._held = 0
        self._norms: list[tuple[torch.Tensor, list[list[int]]]] = []  # (norms of a group, their columns)
        self._retained: list[tuple] = []  # (h, its version, cols, key)
        self._retained_bytes = 0
        self._watched: list[tuple] = []  # (h, its version, key): the learning step's hooked outputs

    def grad(self, g: torch.Tensor, cols: list[int]) -> None:
        """Columns ``cols`` get ||g|| (``cols`` may still grow until step())."""
        self._grads.append((g, cols))
        self._held += g.numel() * g.element_size()
        if self._held > self.grad_bytes:
            self._reduce()

    def retain(self, h: torch.Tensor, cols: list[int], key: int) -> bool:
        """Keep h to read dL/dh at step() into ``cols``; False: hook it instead (h is large,
        a leaf, changed in place by a later op, or this is the step that learns which are)."""
        n = h.numel()
        if n > self.retain_numel or h.grad_fn is None or key in self._in_place:
            return False
        if not self._learned:
            self._watched.append((h, h._version, key))
            return False
        size = n * h.element_size()
        if self._retained_bytes + size > self.grad_bytes:
            return False
        h.retain_grad()
        self._retained.append((h, h._version, cols, key))
        self._retained_bytes += size
        return True

    def adopt(self, h: torch.Tensor, version: int, cols: list[int], key: int) -> None:
        """A lean hook retained h's gradient (gradlab.recorder.fast_taps; its bytes counted there)."""
        self._retained.append((h, version, cols, key))

    @property
    def holds(self) -> bool:
        """Whether any gradient of the step is kept here."""
        return bool(self._grads or self._retained or self._norms or self._watched)

    def finish(self) -> None:
        """Collect the retained gradients and reduce every gradient kept."""
        for h, version, cols, key in self._retained:
            g = h.grad
            if h._version != version:  # .grad is the changed tensor's: not this point's
                self._in_place.add(key)
            elif g is not None:
                self._grads.append((g, cols))
        self._retained, self._retained_bytes = [], 0
        for h, version, key in self._watched:
            if h._version != version:
                self._in_place.add(key)
        self._watched = []
        self._learned = True
        self._reduce()

    @torch.no_grad()
    def _reduce(self) -> None:
        """The norms of the gradients kept so far, a stack per shape: few kernels however many
        (on a CPU, one fused call where it can)."""
        if self._grads and self.device.type == "cpu":
            fused = fused_tensors.norms([g for g, _ in self._grads])
            if fused is not None:
                self._norms.append((fused, [cols for _, cols in self._grads]))
                self._grads, self._held = [], 0
                return
        by_shape: dict[tuple, list[int]] = {}
        for i, (g, _) in enumerate(self._grads):
            by_shape.setdefault((g.shape, g.dtype), []).append(i)
        for members in by_shape.values():
            stacked = self.buffers.stack([self._grads[i][0] for i in members])
            self._norms.append((row_norms(stacked), [self._grads[i][1] for i in members]))
        self._grads, self._held = [], 0

    def write(self, row: torch.Tensor) -> list[int]:
        """Put the norms into ``row``; returns the columns set."""
        if not self._norms:
            return []
        key = tuple((n.shape[0], tuple(map(tuple, c))) for n, c in self._norms)
        src, slot, dst, cols = cached_plan(self._plans, key, lambda: self._plan(self._norms))
        norms = torch.cat([n for n, _ in self._norms]) if len(self._norms) > 1 else self._norms[0][0]
        put_norms(row, dst, norms.index_select(0, src), slot)  # (micro-batches: the norm over all of them)
        return cols

    def _plan(self, norms: list) -> tuple:
        """Positions in the concatenated norms -> row columns (a gradient may fill several),
        and, where a column gets several (micro-batches), the slot each adds its square to."""
        src, dst, offset = [], [], 0
        for n, columns in norms:
            for i, cs in enumerate(columns):
                src += [offset + i] * len(cs)
                dst += cs
            offset += n.shape[0]
        as_index = lambda v: torch.tensor(v, dtype=torch.long, device=self.device)  # noqa: E731
        cols, slot = column_slots(dst)
        return as_index(src), None if slot is None else as_index(slot), as_index(cols), cols
