"""The recorder's reductions: sums, norms and counts (positive, or beyond ±t) accumulated in float32.

Each works on a whole tensor (``dim=None``: the recorder's hooks, one probe point at a
time) or row-wise on a stack of samples (``dim=1``: the deferred path, all points of one
shape at once), with the same arithmetic either way, so both paths record the same values.
"""

from __future__ import annotations

import torch

__all__ = ["COUNT_UNIT", "F32", "TINY", "count", "count_beyond", "flat", "norm", "row_norms", "total"]

F32 = torch.float32
TINY = torch.finfo(torch.float32).tiny
COUNT_UNIT = TINY  # what one counted element adds to a count's raw value (see count)
# Norms of float32 tensors at least this large are taken row-wise first (see norm).
_ROWS_MIN_NUMEL = 1 << 16


def flat(h: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view of all of h's elements when h is dense (contiguous or channels_last)."""
    if h.is_contiguous():
        return h.view(-1)
    if (h.dim() == 4 and h.is_contiguous(memory_format=torch.channels_last)) or (
        h.dim() == 5 and h.is_contiguous(memory_format=torch.channels_last_3d)
    ):
        return h.as_strided((h.numel(),), (1,))
    return None


def _sum(x: torch.Tensor, dim: int | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    if dim is None:
        return x.sum() if dtype is None else x.sum(dtype=dtype)
    return x.sum(dim) if dtype is None else x.sum(dim, dtype=dtype)


def total(d: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """The sum of d (over ``dim``, or all of it) as float32."""
    if d.dtype == F32:
        return _sum(d, dim)
    if d.dtype == torch.float64:
        return _sum(d, dim).float()
    return _sum(d, dim, F32)


def norm(h: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """||h||_2 (over ``dim``, or all of it) accumulated in float32.

    Large float32 tensors are reduced over rows first, which parallelises; ``torch.dot(h, h)``
    is avoided, as MKL's threads fight PyTorch's inside backward (docs/recorder.md)."""
    if h.dtype == F32:
        if dim is None and h.numel() >= _ROWS_MIN_NUMEL:
            f = flat(h)
            n = h.numel()
            k = min(n & -n, 1024)  # largest power of two dividing n, at most 1024
            if f is not None and k >= 64:
                # rows of k elements: a whole-tensor norm does not parallelise
                return torch.linalg.vector_norm(torch.linalg.vector_norm(f.view(-1, k), dim=1))
        return torch.linalg.vector_norm(h, dim=dim)
    if h.dtype == torch.float64:
        return torch.linalg.vector_norm(h, dim=dim).float()
    return torch.linalg.vector_norm(h, dim=dim, dtype=F32)


def count(src: torch.Tensor, dim: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The number of elements > 0 (over ``dim``, or all of src) times ``COUNT_UNIT``, as
    float32 (the host divides: one kernel less per count). NaNs make the count NaN
    (float16: they are not counted; the sum and norm flag them in any case). ``out``: a
    scratch tensor shaped like src for the elementwise pass (no allocation). The fraction a
    ReLU zeroes is one minus this count over the numel, before the ReLU (values <= 0) as
    after it (exact zeros).

    Two passes over src, one of them a write: the cheapest exact count found on a CPU
    (``(h > 0).sum()`` and ``count_nonzero`` are slower; docs/recorder.md). ``clamp(h, 0, tiny)`` maps
    h >= tiny (the smallest normal number) to exactly ``tiny`` and h <= 0 to 0, so its sum
    is ``count * tiny``, exact in float32 up to 2**24 elements (the host rounds). Subnormal
    positives (< 1.2e-38 in float32/bf16) count fractionally; float16 uses the sign instead.
    """
    if src.dtype == torch.float16:
        s = torch.sign(src, out=out) if out is not None else torch.sign(src)
        s.clamp_min_(0)
        return _sum(s, dim, F32).mul_(COUNT_UNIT)
    c = torch.clamp(src, 0, TINY, out=out) if out is not None else torch.clamp(src, 0, TINY)
    if c.dtype == F32:
        return _sum(c, dim)
    return _sum(c, dim).float() if c.dtype == torch.float64 else _sum(c, dim, F32)


def count_beyond(src: torch.Tensor, t: float, dim: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The number of elements with ``|src| > t`` (over ``dim``, or all of src) times
    ``COUNT_UNIT``, as :func:`count` gives it (``out``: a scratch tensor shaped like src; src
    is never written). ``|src| - t`` is exact near t (Sterbenz), so its sign is that of the
    comparison; t is rounded to src's dtype. Three elementwise passes, into ``out``."""
    a = torch.abs(src, out=out) if out is not None else torch.abs(src)
    return count(a.sub_(t), dim, out=a)


def row_norms(stacked: torch.Tensor) -> torch.Tensor:
    """||t|| of each tensor t stacked along the first dimension, accumulated in float32 (a
    stack of 0-dim tensors too): the parameter and gradient norms taken a stack per shape."""
    if stacked.dim() == 1:
        return norm(stacked.unsqueeze(1), dim=(1,))
    return norm(stacked, dim=tuple(range(1, stacked.dim())))
