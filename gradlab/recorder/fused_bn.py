"""The BatchNorm derivations of a recorded step in one call of the fused CPU kernels each.

gradlab.recorder.bn_stats and bn_grads derive a BatchNorm's input and output sums and norms,
and its two gradient norms, from per-channel vectors it computed anyway (the saved mean and
invstd, gamma and beta, the weight and bias gradients). On a GPU that is a few batched
kernels a step; on a CPU it is some fifty small PyTorch calls over vectors of a few hundred
values, which cost their dispatch, not their arithmetic. Where the fused kernels are on
(gradlab.recorder.native) one C call per kind reads every BatchNorm's vectors where they lie
and returns two totals per BatchNorm in double; numpy puts them into the step's row. The
formulas are those of bn_stats and bn_grads; only float32 CPU vectors qualify, and the
callers take their PyTorch path otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from gradlab.recorder import native
from gradlab.recorder.fused_tensors import addresses, qualifies
from gradlab.recorder.plans import column_slots

__all__ = ["Scatter", "grad_totals", "input_totals", "output_totals"]


class Scatter:
    """Where a derivation's totals go in the row: ``targets``, one (total's index, column,
    root) each, ``root`` when the column gets the square root of its total; a column named
    twice (micro-batches of one step) gets the total over all of them."""

    def __init__(self, targets: list[tuple[int, int, bool]]):
        self.src = np.asarray([t for t, _, _ in targets], dtype=np.int64)
        self.cols, slot = column_slots([c for _, c, _ in targets])
        self.slot = None if slot is None else np.asarray(slot, dtype=np.int64)
        self.dst = np.asarray(self.cols, dtype=np.int64)
        root = {c: r for _, c, r in targets}
        self.root = np.asarray([root[c] for c in self.cols], dtype=bool)

    def put(self, totals: np.ndarray, row: torch.Tensor) -> list[int]:
        """The totals into ``row`` (float32, CPU); returns the columns written."""
        acc = totals[self.src]  # (a copy: fancy indexing)
        if self.slot is not None:  # micro-batches: a column's totals added up
            acc, picked = np.zeros(len(self.cols)), acc
            np.add.at(acc, self.slot, picked)
        np.sqrt(acc, out=acc, where=self.root)
        row.numpy()[self.dst] = acc
        return self.cols


def _lib(row: torch.Tensor):
    return native.library() if qualifies(row) else None


def input_totals(row: torch.Tensor, means: list, invstds: list, channels: np.ndarray, eps: np.ndarray,
                 scale: np.ndarray) -> np.ndarray | None:  # fmt: skip
    """Per BatchNorm input, (m * sum of its channel means, m * sum of its E[x^2]) as a [2k]
    array; None where the kernels cannot take them."""
    lib = _lib(row)
    m, s = (None, None) if lib is None else (addresses(means), addresses(invstds))
    if m is None or s is None:
        return None
    out = np.empty(2 * len(means))
    lib.bn_input_totals(len(means), m.ctypes.data, s.ctypes.data, channels.ctypes.data, eps.ctypes.data,
                        scale.ctypes.data, out.ctypes.data)  # fmt: skip
    return out


def output_totals(row: torch.Tensor, gamma_beta: torch.Tensor, offsets: np.ndarray, invstds: list,
                  channels: np.ndarray, eps: np.ndarray, scale: np.ndarray) -> np.ndarray | None:  # fmt: skip
    """Per BatchNorm output, (m * sum of its betas, m * sum of its E[y^2]) as a [2k] array
    (``gamma_beta``: the step's [2, total] gammas and betas; ``offsets``: each BatchNorm's
    first channel in it); None where the kernels cannot take them."""
    lib = _lib(row)
    s = None if lib is None or not qualifies(gamma_beta) else addresses(invstds)
    if s is None:
        return None
    gammas = gamma_beta.data_ptr() + 4 * offsets
    betas = gammas + 4 * gamma_beta.shape[1]
    out = np.empty(2 * len(invstds))
    lib.bn_output_totals(len(invstds), gammas.ctypes.data, betas.ctypes.data, s.ctypes.data, channels.ctypes.data,
                         eps.ctypes.data, scale.ctypes.data, out.ctypes.data)  # fmt: skip
    return out


def grad_totals(row: torch.Tensor, rows: list, dgammas: list, dbetas: list, gamma_beta: torch.Tensor,
                offsets: np.ndarray, invstds: list, channels: np.ndarray, eps: np.ndarray, m: np.ndarray,
                examples: np.ndarray, inners: np.ndarray) -> np.ndarray | None:  # fmt: skip
    """Per BatchNorm backward, (||dL/dy||^2, ||dL/dx||^2) as a [2k] array (``rows``: the
    per-example, per-channel norms of dL/dy, or dL/dy itself, [examples, C, inners] each;
    the rest as in :func:`output_totals`); None where the kernels cannot take them."""
    lib = _lib(row)
    if lib is None or not qualifies(gamma_beta):
        return None
    where = [addresses(t) for t in (rows, dgammas, dbetas, invstds)]
    if any(w is None for w in where):
        return None
    gammas = gamma_beta.data_ptr() + 4 * offsets
    out = np.empty(2 * len(rows))
    r, dg, db, s = where
    lib.bn_grad_totals(len(rows), r.ctypes.data, examples.ctypes.data, inners.ctypes.data, dg.ctypes.data,
                       db.ctypes.data, gammas.ctypes.data, s.ctypes.data, channels.ctypes.data, eps.ctypes.data,
                       m.ctypes.data, out.ctypes.data, torch.get_num_threads())  # fmt: skip
    return out
