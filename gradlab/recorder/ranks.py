"""Data-parallel recording: ||dL/dh|| of the global batch, and one rank that keeps the rows.

Under DistributedDataParallel every rank sees its own shard, so the gradient of the loss
with respect to an activation is per shard: rank r's autograd gives ``g_r = W * dL/dh_r``
on its examples (its local mean loss; synchronized BatchNorms couple the shards through
their own all-reduce). The activations of the global batch are the shards side by side,
so ``||dL/dh|| = sqrt(sum_r ||g_r||^2) / W``: one all-reduce of the step's squared norms
per recorded step. Parameter gradients need nothing (DDP averaged them), and activation
statistics stay rank 0's shard, i.e. the first examples of the global batch, as in one
process. Every rank must watch and call ``step()`` on the same steps; rank 0 keeps and
writes the rows, the others only measure.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from gradlab.errors import RecorderError

__all__ = ["RankCombiner"]


class RankCombiner:
    """Combines the gradient-norm columns of each recorded step's row over the ranks."""

    def __init__(self):
        if not (dist.is_available() and dist.is_initialized()):
            raise RecorderError("combine_ranks=True needs a process group: call torch.distributed."
                                "init_process_group (torchrun does) before gradlab.watch.")
        self.size = dist.get_world_size()
        self.main = dist.get_rank() == 0
        self._cols: torch.Tensor | None = None

    def set_columns(self, cols: list[int], device: torch.device) -> None:
        """The row's columns that hold ||dL/dh|| (the same on every rank)."""
        self._cols = torch.tensor(cols, dtype=torch.long, device=device) if cols else None

    def combine(self, row: torch.Tensor) -> None:
        """Make ``row``'s gradient norms the global batch's (a collective: every rank calls it)."""
        if self._cols is None or self.size == 1:
            return
        squares = row.index_select(0, self._cols).square_()
        dist.all_reduce(squares)
        row.index_copy_(0, self._cols, squares.sqrt_().div_(self.size))
