"""Parameter statistics in one call of the fused CPU kernel (gradlab.recorder.native).

The path gradlab.recorder.params takes where it can: every parameter a float32, contiguous
CPU tensor, every gradient there and contiguous. One C call reads each gradient once and
each weight once, writes the three norms straight into the step's row and copies the
weights into the previous record's stacks (the same stacks, per shape group, the PyTorch
path keeps, so a step may take either path). Anything else (a GPU, float64, a missing or
sparse gradient, channels_last weights) is left to the PyTorch path for that step.
"""

from __future__ import annotations

import numpy as np
import torch

from gradlab.recorder import fused_tensors, native
from gradlab.recorder.statistics import P_GRAD, P_UPDATE, P_WEIGHT

__all__ = ["FusedParamNorms"]

F32 = torch.float32
_THREADED_NUMEL = 1 << 20  # elements from which the kernel splits the parameters among threads
_OPENMP_NUMEL = 1 << 15  # ... among PyTorch's OpenMP threads, where the kernels were built with OpenMP


class FusedParamNorms:
    """Writes the parameter columns with one kernel call; owns its previous-weights stacks.

    ``params``: the parameters (positions as in ``cols``); ``cols``: raw value -> each
    parameter's column; ``members``: each shape group's parameter positions (the layout of
    the previous weights, as gradlab.recorder.params keeps them)."""

    def __init__(self, lib, params: list[torch.Tensor], cols: dict[str, list[int]], members: list[list[int]]):
        self.lib = lib
        self.params = params
        k = len(params)
        none = np.full(k, -1, dtype=np.int64)
        self.cols = [np.asarray(cols[raw], dtype=np.int64) if raw in cols else none for raw in (P_GRAD, P_WEIGHT, P_UPDATE)]
        self.host = np.concatenate([c[c >= 0] for c in self.cols])
        self.want_grad = P_GRAD in cols
        self.numel = np.asarray([p.numel() for p in params], dtype=np.int64)
        # (threads of its own compete with PyTorch's idle OpenMP threads, which spin: only for large models)
        threaded = _OPENMP_NUMEL if lib.openmp() else _THREADED_NUMEL
        self.threads = torch.get_num_threads() if int(self.numel.sum()) >= threaded else 1
        self.prev: list[torch.Tensor] = []  # per group, the stacked weights (filled by the kernel)
        self.prev_ptrs = np.zeros(k, dtype=np.int64)  # each parameter's row in them
        if P_UPDATE in cols:
            for group in members:
                p = params[group[0]]
                stack = torch.empty((len(group), *p.shape), dtype=F32)
                self.prev.append(stack)
                for j, i in enumerate(group):
                    self.prev_ptrs[i] = stack[j].data_ptr()
        self._weights_seen: list[int] | None = None  # the weights' addresses when last checked
        self._weights = np.zeros(k, dtype=np.int64)  # ... as the kernel reads them
        self._grads = np.zeros(k, dtype=np.int64)

    @classmethod
    def make(cls, params: list[torch.Tensor], cols: dict, members: list[list[int]]) -> FusedParamNorms | None:
        """The fused path for these parameters, or None when the kernels are off or the
        parameters are not float32 CPU tensors (no copy of the weights is kept for nothing)."""
        if not params or any(not p.is_cpu or p.dtype is not F32 for p in params):
            return None
        lib = native.library()
        return None if lib is None else cls(lib, params, cols, members)

    def write(self, row: torch.Tensor, written: np.ndarray, prev: list[torch.Tensor] | None) -> bool:
        """The norms into ``row`` (float32, CPU); ``prev``: the previous record's stacked
        weights as the caller holds them (None: none yet). False, with nothing written,
        where this step's tensors do not qualify."""
        params = self.params
        weights = [p.data_ptr() for p in params]
        if weights != self._weights_seen:  # (new storage: a changed dtype or layout comes with one)
            checked = fused_tensors.addresses(params)
            if checked is None:
                return False
            self._weights_seen, self._weights = weights, checked
        if self.want_grad:
            try:
                grads = [g.data_ptr() if g.is_contiguous() else 0 for g in (p.grad for p in params)]
            except (AttributeError, RuntimeError):  # a missing or sparse gradient
                return False
            if 0 in grads:
                return False
            self._grads[:] = grads
        first = 1
        if self.prev and prev is not None:
            first = 0
            if prev is not self.prev:  # the PyTorch path's stacks: carried over once
                for mine, theirs in zip(self.prev, prev):
                    mine.copy_(theirs)
        self.lib.param_norms(len(params), self._grads.ctypes.data, self._weights.ctypes.data, self.prev_ptrs.ctypes.data,
                             self.numel.ctypes.data, self.cols[0].ctypes.data, self.cols[1].ctypes.data,
                             self.cols[2].ctypes.data, row.data_ptr(), first, self.threads)  # fmt: skip
        written[self.host] = True
        return True
