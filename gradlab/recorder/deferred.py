"""Deferred reductions: what a recorded step's hooks collect, reduced together in step().

On a GPU an eager training step of a small network is bound by kernel launches, not by
arithmetic, so the cost of recording is the number of kernels the hooks launch. Reducing
each probe point in its own hooks takes several launches per point (a sum, a norm, a
count, the gradient's norm); deferring them takes one per point and a few per step:

* forward hooks copy the activation sample (the first ``act_sample`` examples) into a
  tensor of its own, outside autograd: a slice and a copy, one kernel, and exact even when
  a later in-place op (a ReLU with ``inplace=True``) overwrites the output;
* gradient hooks keep a reference to dL/dh: no launch;
* ``step()`` stacks the samples of each (shape, dtype) and reduces every stack row-wise
  (sum, norm, positive count: gradlab.recorder.reductions, the same arithmetic as the hooks),
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
from gradlab.recorder.reductions import count, foreach_norm, norm, total

__all__ = ["COUNT", "Deferred", "NORM", "STATS", "SUM"]

SUM, NORM, COUNT = "sum", "norm", "count"
STATS = (SUM, NORM, COUNT)
DEFAULT_GRAD_BYTES = 256 << 20


def _reduce(stat: str, x: torch.Tensor) -> torch.Tensor:
    """Per-point statistic of a [points, ...] stack (over all but the first dim), float32."""
    dims = tuple(range(1, x.dim()))
    if stat == SUM:
        return total(x, dim=dims)
    if stat == NORM:
        return norm(x, dim=dims)
    return count(x, dim=dims)


class Deferred:
    """One recorded step's samples and gradients, and the columns they fill."""

    def __init__(self, device: torch.device, grad_bytes: int = DEFAULT_GRAD_BYTES):
        self.device = device
        self.grad_bytes = grad_bytes
        self._plans: dict[tuple, tuple] = {}
        self.clear()

    def clear(self) -> None:
        self._samples: list[torch.Tensor] = []
        self._wants: dict[int, tuple[int, str]] = {}  # column -> (sample, stat); the last call wins
        self._grads: list[tuple[torch.Tensor, list[int]]] = []
        self._held = 0
        self._norms: list[tuple[torch.Tensor, list[int]]] = []

    def sample(self, h: torch.Tensor, first: int | None = None) -> int:
        """Keep a copy of ``h`` (of its ``first`` examples); returns its number for :meth:`want`."""
        with torch.no_grad():  # a copy outside the autograd graph, without a detach
            self._samples.append((h if first is None else h[:first]).clone())
        return len(self._samples) - 1

    def want(self, k: int, stat: str, col: int) -> None:
        """Column ``col`` gets statistic ``stat`` of sample ``k``."""
        self._wants[col] = (k, stat)

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

    def gradient_values(self, vals: list) -> None:
        """Put the gradient norms into ``vals`` (one 0-dim tensor per column)."""
        self._reduce_grads()
        for n, cols in self._norms:
            for c in cols:
                vals[c] = n

    def write_activations(self, row: torch.Tensor) -> list[int]:
        """Reduce the samples into ``row`` (float32, on the device); returns the columns set."""
        if not self._wants:
            return []
        samples = self._samples
        key = (tuple((s.shape, s.dtype) for s in samples), tuple(self._wants.items()))
        plan = cached_plan(self._plans, key, lambda: self._plan(samples, self._wants))
        groups, src, dst, cols = plan
        parts = []
        for members, stats in groups:
            x = torch.stack([samples[k] for k in members])
            parts.extend(_reduce(stat, x) for stat in stats)
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        row.index_copy_(0, dst, values.index_select(0, src))
        return cols

    def _plan(self, samples: list[torch.Tensor], wants: dict[int, tuple[int, str]]) -> tuple:
        """Groups of same-(shape, dtype) samples with the statistics each needs, and where each
        reduced value goes: positions in the concatenated results -> row columns."""
        by_shape: dict[tuple, list[int]] = {}
        for k, s in enumerate(samples):
            by_shape.setdefault((s.shape, s.dtype), []).append(k)
        needed: dict[int, set] = {}
        for k, stat in wants.values():
            needed.setdefault(k, set()).add(stat)
        groups, position, offset = [], {}, 0
        for members in by_shape.values():
            stats = [st for st in STATS if any(st in needed.get(k, ()) for k in members)]
            if not stats:
                continue
            groups.append((members, stats))
            for st in stats:
                for i, k in enumerate(members):
                    position[(k, st)] = offset + i
                offset += len(members)
        src = [position[w] for w in wants.values()]
        cols = list(wants)
        as_index = lambda v: torch.tensor(v, dtype=torch.long, device=self.device)  # noqa: E731
        return groups, as_index(src), as_index(cols), cols

