"""Parameter statistics of a recorded step: gradient, weight and update norms of every tensor.

One fused ``torch._foreach_norm`` over all gradients and one over all weights, read at
``step()`` (no parameter hooks). The update norm is ``||w_now - w_at_previous_record||``:
the recorder keeps a copy of the weights at each record (NaN on the first).
"""

from __future__ import annotations

import torch

from gradlab.recorder.layout import Layout
from gradlab.recorder.reductions import foreach_norm
from gradlab.recorder.statistics import P_GRAD, P_UPDATE, P_WEIGHT
from gradlab.recorder.targets import ParamTarget

__all__ = ["ParamStats"]


class ParamStats:
    """Writes the parameter columns of a step's values; holds the weights of the last record."""

    def __init__(self, params: list[ParamTarget], layout: Layout, nan: torch.Tensor):
        self.params = params
        self.weights = [p.param for p in params]  # read under no_grad: no detach needed
        self.grad_cols = layout.params.get(P_GRAD, [])
        self.weight_cols = layout.params.get(P_WEIGHT, [])
        self.update_cols = layout.params.get(P_UPDATE, [])
        self.nan = nan  # "measured: NaN", for the first update norm
        self.prev: list[torch.Tensor] | None = None  # the weights at the previous record

    @torch.no_grad()
    def write(self, vals: list) -> None:
        """Put each recorded parameter statistic into ``vals`` (one 0-dim tensor per column)."""
        weights = self.weights
        if self.grad_cols:
            idx, grads = [], []
            for i, p in enumerate(self.params):
                g = p.param.grad
                if g is not None and g.layout == torch.strided:
                    idx.append(i)
                    grads.append(g)
            if grads:
                for i, v in zip(idx, foreach_norm(grads)):
                    vals[self.grad_cols[i]] = v
        if self.weight_cols and weights:
            for c, v in zip(self.weight_cols, foreach_norm(weights)):
                vals[c] = v
        if self.update_cols and weights:
            if self.prev is None or len(self.prev) != len(weights):
                for c in self.update_cols:
                    vals[c] = self.nan
                self.prev = [w.clone() for w in weights]
            else:
                try:
                    torch._foreach_sub_(self.prev, weights)  # prev - w in place: the same norm as w - prev
                    for c, v in zip(self.update_cols, foreach_norm(self.prev)):
                        vals[c] = v
                    torch._foreach_copy_(self.prev, weights)
                except BaseException:
                    self.prev = None  # half updated: the next record starts over (NaN)
                    raise

    def state(self) -> list[torch.Tensor] | None:
        """A copy of the previous record's weights (for a checkpoint)."""
        return None if self.prev is None else [w.detach().clone() for w in self.prev]

    def load(self, prev: list[torch.Tensor] | None) -> None:
        """Restore :meth:`state`, on the parameters' devices and dtypes."""
        if prev is None:
            self.prev = None
        else:
            self.prev = [w.detach().to(device=p.param.device, dtype=p.param.dtype).clone()
                         for w, p in zip(prev, self.params)]  # fmt: skip
