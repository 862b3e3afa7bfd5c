"""Sums, norms and positive counts of a step's many small CPU tensors, in one kernel call.

The deferred half of the recorder (gradlab.recorder.deferred, kept_grads) keeps the small
outputs and gradients of a step for ``step()``. On a GPU it stacks them by shape and reduces
each stack in a few kernels; on a CPU the stacking (a copy, and a call per tensor) costs
more than the sums, so where the fused kernels are on (gradlab.recorder.native) one call
reads each tensor once, where it lies, for every value it gives: the same values as
gradlab.recorder.reductions (sum, norm, and ``count`` in COUNT_UNITs) to float32 rounding.
Only float32, contiguous CPU tensors qualify; the callers take the PyTorch path otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from gradlab.recorder import native
from gradlab.recorder.reductions import COUNT_UNIT, F32

__all__ = ["addresses", "in_hook", "norms", "qualifies", "stats"]


def qualifies(t: torch.Tensor) -> bool:
    """Whether the kernels can read t: a contiguous float32 CPU tensor."""
    return t.dtype is F32 and t.is_cpu and t.is_contiguous()


def addresses(tensors: list[torch.Tensor]) -> np.ndarray | None:
    """Where each tensor's data starts, or None unless all :func:`qualify <qualifies>`."""
    if not all(qualifies(t) for t in tensors):
        return None
    return np.fromiter((t.data_ptr() for t in tensors), dtype=np.int64, count=len(tensors))


def norms(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """||t|| of each tensor, a float32 [k] tensor; None where the kernel cannot take them."""
    numel = np.fromiter((t.numel() for t in tensors), dtype=np.int64, count=len(tensors))
    values = _reduce(tensors, numel, (False, True, False))
    return None if values is None else values[1]


def stats(tensors: list[torch.Tensor], numel: np.ndarray, wanted: tuple[bool, bool, bool]) -> torch.Tensor | None:
    """Rows (sum, norm, count) of a float32 [3, k] tensor for the first ``numel[i]`` elements
    of each tensor (a sample of its leading examples); a row not ``wanted`` is left unset.
    None where the kernel cannot take them."""
    return _reduce(tensors, numel, wanted)


def _reduce(tensors: list[torch.Tensor], numel: np.ndarray, wanted: tuple[bool, bool, bool]) -> torch.Tensor | None:
    """The one kernel call behind :func:`norms` and :func:`stats`."""
    lib = native.library()
    where = None if lib is None else addresses(tensors)
    if where is None:
        return None
    k = len(tensors)
    out = torch.empty((3, k), dtype=F32)
    base = out.data_ptr()
    rows = [base + r * k * 4 if w else None for r, w in enumerate(wanted)]
    lib.tensor_stats(k, where.ctypes.data, numel.ctypes.data, *rows, COUNT_UNIT, torch.get_num_threads())
    return out


def in_hook(t: torch.Tensor, into: int) -> bool:
    """(sum, norm, count) of one tensor into the three float32 at address ``into``, read in
    one pass while it is still in cache (in a hook), where PyTorch's three reductions take
    four passes and four dispatches; a large tensor is read by PyTorch's intra-op threads
    (OpenMP). False, with nothing written, unless t is a contiguous float32 CPU tensor and
    the kernels are on."""
    lib = native.library()
    if lib is None or not qualifies(t):
        return False
    lib.one_stats(t.data_ptr(), t.numel(), into, COUNT_UNIT, torch.get_num_threads())
    return True
