"""Parameter statistics of a recorded step: gradient, weight and update norms of every tensor.

Read at ``step()``, with no parameter hooks. The parameters are grouped by shape and dtype
once (a transformer's layers, a ResNet stage's convolutions share a few shapes), and each
group's tensors are stacked and reduced row-wise: a handful of kernels a step however many
parameters there are, where a norm per tensor would cost a launch (GPU) or a dispatch (CPU)
each. The update norm is ``||w_now - w_at_previous_record||``: the recorder keeps each
group's stacked weights of the last record (NaN on the first). The values go into the
step's row with one ``index_copy_`` per statistic. On a CPU, where each of those calls costs
more than its arithmetic, one call of a fused kernel does it all instead
(gradlab.recorder.fused_params) when the tensors allow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gradlab.recorder.fused_params import FusedParamNorms
from gradlab.recorder.layout import Layout
from gradlab.recorder.reductions import F32, row_norms
from gradlab.recorder.stack_buffers import StackBuffers
from gradlab.recorder.statistics import P_GRAD, P_UPDATE, P_WEIGHT
from gradlab.recorder.targets import ParamTarget

__all__ = ["ParamStats"]


@dataclass
class _Group:
    """Parameters of one shape and dtype: their positions, the tensors, and per raw value their columns."""

    members: list[int]
    tensors: list[torch.Tensor]  # the parameters themselves (read at each record: no lookup on the way)
    cols: dict[str, torch.Tensor]  # raw value -> the members' columns, on the device
    host_cols: dict[str, np.ndarray]  # ... and on the host (no sync to mark them written)


class ParamStats:
    """Writes the parameter columns of a recorded step's row; holds the weights of the last record."""

    def __init__(self, params: list[ParamTarget], layout: Layout, device: torch.device):
        self.params = params
        self.device = device
        self.cols = {raw: layout.params[raw] for raw in (P_GRAD, P_WEIGHT, P_UPDATE) if raw in layout.params}
        self._groups: list[_Group] | None = None  # by shape, known once lazy modules have run (groups)
        self._all: dict[str, tuple[torch.Tensor, np.ndarray]] = {}  # raw value -> every group's columns, in order
        self.prev: list[torch.Tensor] | None = None  # per group, its stacked weights at the previous record
        self.buffers = StackBuffers()  # the stacks' memory, kept from record to record
        self._parity = 0  # which of two weight buffers the last record filled
        self._fused: FusedParamNorms | None | bool = None  # the one-call CPU path (None: not made yet; False: none)

    @property
    def groups(self) -> list[_Group]:
        """The parameters by shape and dtype (built at the first record: a lazy module's
        parameters get their shapes in its first forward)."""
        if self._groups is None:
            by_shape: dict[tuple, list[int]] = {}
            for i, p in enumerate(self.params):
                by_shape.setdefault((tuple(p.param.shape), p.param.dtype, p.param.device), []).append(i)
            as_index = lambda v: torch.tensor(v, dtype=torch.long, device=self.device)  # noqa: E731
            self._groups = [
                _Group(members, [self.params[i].param for i in members],
                       {raw: as_index([c[i] for i in members]) for raw, c in self.cols.items()},
                       {raw: np.asarray([c[i] for i in members], dtype=np.int64) for raw, c in self.cols.items()})
                for members in by_shape.values()
            ]
            self._all = {raw: (torch.cat([g.cols[raw] for g in self._groups]),
                               np.concatenate([g.host_cols[raw] for g in self._groups]))
                         for raw in self.cols if self._groups}  # fmt: skip
        return self._groups

    @torch.no_grad()
    def write(self, row: torch.Tensor, written: np.ndarray) -> None:
        """Put each recorded parameter statistic into ``row`` and mark it in ``written``."""
        groups = self.groups
        if not groups:
            return
        if self._fused is None:
            members = [g.members for g in groups]
            self._fused = FusedParamNorms.make([p.param for p in self.params], self.cols, members) or False
        if self._fused and row.is_cpu and row.is_contiguous() and self._fused.write(row, written, self.prev):
            if self._fused.prev:
                self.prev = self._fused.prev
            return
        if P_GRAD in self.cols:
            self._write_grad_norms(groups, row, written)
        if P_WEIGHT in self.cols or P_UPDATE in self.cols:
            self._parity ^= 1  # the weights go into the buffers the previous record's did not
            weights = [self.buffers.stack(g.tensors, ("w", self._parity)) for g in groups]
            if P_WEIGHT in self.cols:
                self._put(P_WEIGHT, [row_norms(w) for w in weights], row, written)
            if P_UPDATE in self.cols:
                if self.prev is None:  # NaN: measured, with no previous record to compare
                    changes = [torch.full((len(g.members),), float("nan"), dtype=F32, device=row.device) for g in groups]
                else:
                    changes = [row_norms(torch.sub(w, p, out=self.buffers.like(w, "change")))
                               for w, p in zip(weights, self.prev)]  # fmt: skip
                self._put(P_UPDATE, changes, row, written)
                self.prev = weights

    def _put(self, raw: str, values: list[torch.Tensor], row: torch.Tensor, written: np.ndarray) -> None:
        """Every group's values of ``raw``, in group order, into their columns."""
        cols, host = self._all[raw]
        row.index_copy_(0, cols, torch.cat(values) if len(values) > 1 else values[0])
        written[host] = True

    def _write_grad_norms(self, groups: list[_Group], row: torch.Tensor, written: np.ndarray) -> None:
        """The gradient norms, a stack per group: one stack when every gradient is there and
        dense (the usual case); a gradient that is missing or sparse is not written."""
        try:
            stack = self.buffers.stack
            self._put(P_GRAD, [row_norms(stack([t.grad for t in g.tensors], "grad")) for g in groups],
                      row, written)  # fmt: skip
            return
        except (AttributeError, TypeError, RuntimeError, NotImplementedError):  # a None or sparse gradient
            pass
        for g in groups:
            grads = [t.grad for t in g.tensors]
            present = [j for j, t in enumerate(grads) if t is not None and t.layout == torch.strided]
            if present:
                row.index_copy_(0, g.cols[P_GRAD][present],
                                row_norms(torch.stack([grads[j] for j in present])))  # fmt: skip
                written[g.host_cols[P_GRAD][present]] = True

    def state(self) -> list[torch.Tensor] | None:
        """A copy of the previous record's weights, one tensor per parameter (for a checkpoint)."""
        if self.prev is None:
            return None
        out: list = [None] * len(self.params)
        for g, stacked in zip(self.groups, self.prev):
            for j, i in enumerate(g.members):
                out[i] = stacked[j].detach().clone()
        return out

    def load(self, prev: list[torch.Tensor] | None) -> None:
        """Restore :meth:`state`, on the parameters' devices and dtypes."""
        if prev is None:
            self.prev = None
            return
        self.prev = [torch.stack([prev[i].detach().to(device=self.params[i].param.device,
                                                       dtype=self.params[i].param.dtype) for i in g.members])
                     for g in self.groups]  # fmt: skip

