"""Reused outputs for the recorder's stacks: a recorded step stacks the same shapes every time.

Stacking a group of tensors (parameters of one shape, gradients or samples of one shape)
into a fresh tensor asks the allocator for memory each step; past the C library's mmap
threshold (128 KB) that memory comes as new pages, and touching them costs more than
the stack itself on a small network's step. Stacking into a buffer kept from the previous
step does not. Buffers are kept up to ``limit_bytes`` each: a larger stack's arithmetic
outweighs its allocation, and keeping it would hold its memory between steps.
"""

from __future__ import annotations

import torch

__all__ = ["StackBuffers"]

MAX_BUFFERS = 64  # distinct (tag, count, shape) kept; past that the cache starts over


class StackBuffers:
    """``stack(tensors, tag)``: ``torch.stack(tensors)`` into a buffer reused for the same
    tag, count, shape, dtype and device. The result is overwritten by the next stack with
    that key: callers keep it until the step's row is written, no longer (or alternate tags)."""

    def __init__(self, limit_bytes: int = 4 << 20):
        self.limit_bytes = limit_bytes
        self._buffers: dict[tuple, torch.Tensor] = {}

    def stack(self, tensors: list[torch.Tensor], tag=0) -> torch.Tensor:
        t = tensors[0]
        key = (tag, len(tensors), t.shape, t.dtype, t.device)
        buf = self._buffers.get(key)
        if buf is None:
            if len(tensors) * t.numel() * t.element_size() > self.limit_bytes:
                return torch.stack(tensors)
            if len(self._buffers) >= MAX_BUFFERS:
                self._buffers.clear()
            buf = self._buffers[key] = torch.empty((len(tensors), *t.shape), dtype=t.dtype, device=t.device)
        return torch.stack(tensors, out=buf)

    def like(self, t: torch.Tensor, tag) -> torch.Tensor:
        """A kept buffer shaped like ``t`` (for an elementwise result), or a new one past the limit."""
        key = (tag, -1, t.shape, t.dtype, t.device)
        buf = self._buffers.get(key)
        if buf is None:
            if t.numel() * t.element_size() > self.limit_bytes:
                return torch.empty_like(t)
            if len(self._buffers) >= MAX_BUFFERS:
                self._buffers.clear()
            buf = self._buffers[key] = torch.empty_like(t)
        return buf
