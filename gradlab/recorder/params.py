"""Parameter statistics of a recorded step: gradient, weight and update norms of every tensor.

Read at ``step()``, with no parameter hooks. The parameters are grouped by shape and dtype
once (a transformer's layers, a ResNet stage's convolutions share a few shapes), and each
group's tensors are stacked and reduced row-wise: a handful of kernels a step however many
parameters there are, where a norm per tensor would cost a launch (GPU) or a dispatch (CPU)
each. The update norm is ``||w_now - w_at_previous_record||``: the recorder keeps each
group's stacked weights of the last record (NaN on the first). The values go into the
step's row with one ``index_copy_`` per statistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gradlab.recorder.layout import Layout
from gradlab.recorder.reductions import F32, norm
from gradlab.recorder.statistics import P_GRAD, P_UPDATE, P_WEIGHT
from gradlab.recorder.targets import ParamTarget

__all__ = ["ParamStats"]


@dataclass
class _Group:
    """Parameters of one shape and dtype: their positions, and per raw value their columns."""

    members: list[int]
    cols: dict[str, torch.Tensor]  # raw value -> the members' columns, on the device
    host_cols: dict[str, np.ndarray]  # ... and on the host (no sync to mark them written)
    dims: tuple[int, ...]  # the dimensions a stacked row is reduced over


class ParamStats:
    """Writes the parameter columns of a recorded step's row; holds the weights of the last record."""

    def __init__(self, params: list[ParamTarget], layout: Layout, device: torch.device):
        self.params = params
        self.device = device
        self.cols = {raw: layout.params[raw] for raw in (P_GRAD, P_WEIGHT, P_UPDATE) if raw in layout.params}
        self._groups: list[_Group] | None = None  # by shape, known once lazy modules have run (groups)
        self.prev: list[torch.Tensor] | None = None  # per group, its stacked weights at the previous record

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
                _Group(members, {raw: as_index([c[i] for i in members]) for raw, c in self.cols.items()},
                       {raw: np.asarray([c[i] for i in members], dtype=np.int64) for raw, c in self.cols.items()},
                       tuple(range(1, len(shape) + 1)))
                for (shape, _, _), members in by_shape.items()
            ]
        return self._groups

    @torch.no_grad()
    def write(self, row: torch.Tensor, written: np.ndarray) -> None:
        """Put each recorded parameter statistic into ``row`` and mark it in ``written``."""
        values: dict[str, list] = {raw: [] for raw in self.cols}
        where: dict[str, list] = {raw: [] for raw in self.cols}  # columns, on the device and on the host
        weights_now = []
        first = self.prev is None
        for k, g in enumerate(self.groups):
            if P_GRAD in self.cols:
                self._grad_norms(g, values[P_GRAD], where[P_GRAD])
            if P_WEIGHT in self.cols or P_UPDATE in self.cols:
                w = torch.stack([self.params[i].param for i in g.members])
                weights_now.append(w)
                if P_WEIGHT in self.cols:
                    values[P_WEIGHT].append(_row_norms(w, g.dims))
                    where[P_WEIGHT].append((g.cols[P_WEIGHT], g.host_cols[P_WEIGHT]))
                if P_UPDATE in self.cols:
                    change = None if first else _row_norms(w - self.prev[k], g.dims)
                    values[P_UPDATE].append(change if change is not None else torch.full(
                        (len(g.members),), float("nan"), dtype=F32, device=row.device))  # NaN: measured, no previous
                    where[P_UPDATE].append((g.cols[P_UPDATE], g.host_cols[P_UPDATE]))
        if P_UPDATE in self.cols:
            self.prev = weights_now
        for raw in self.cols:
            if values[raw]:
                cols = torch.cat([c for c, _ in where[raw]]) if len(where[raw]) > 1 else where[raw][0][0]
                row.index_copy_(0, cols, torch.cat(values[raw]) if len(values[raw]) > 1 else values[raw][0])
                for _, host in where[raw]:
                    written[host] = True

    def _grad_norms(self, g: _Group, values: list, where: list) -> None:
        """The group's gradient norms (a gradient that is missing or sparse: not written)."""
        grads = [self.params[i].param.grad for i in g.members]
        present = [j for j, t in enumerate(grads) if t is not None and t.layout == torch.strided]
        if not present:
            return
        if len(present) == len(grads):
            values.append(_row_norms(torch.stack(grads), g.dims))
            where.append((g.cols[P_GRAD], g.host_cols[P_GRAD]))
            return
        values.append(_row_norms(torch.stack([grads[j] for j in present]), g.dims))
        where.append((g.cols[P_GRAD][present], g.host_cols[P_GRAD][present]))

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


def _row_norms(stacked: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """||t|| of each stacked tensor t, accumulated in float32 (gradlab.recorder.reductions)."""
    return norm(stacked, dim=dims) if dims else norm(stacked.unsqueeze(1), dim=(1,))
