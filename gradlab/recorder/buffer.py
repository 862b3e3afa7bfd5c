"""Recorded steps kept on the device until the host reads them: one row per step.

A recorded step's values are stacked into a row of a preallocated [capacity, width]
float32 tensor, so recording never waits for the device; the host copies the filled rows
at flush time, the recorder's only sync. Beside each row the host keeps what it already
knows without asking the device: the step, which columns were written and how many
elements each probe point's sums cover. Gradient histograms get their own, coarser buffer.
"""

from __future__ import annotations

import numpy as np
import torch

from gradlab.recorder import histograms as H
from gradlab.recorder.reductions import F32

__all__ = ["HistogramBuffer", "StepBuffer"]


class StepBuffer:
    """Rows of recorded steps on ``device``; full after ``capacity`` of them."""

    def __init__(self, capacity: int, width: int, points: int, device: torch.device):
        self.capacity = capacity
        self.width = width
        self.values = torch.empty((capacity, max(width, 1)), dtype=F32, device=device)
        self.steps = np.zeros(capacity, dtype=np.int64)
        self.written = np.zeros((capacity, width), dtype=bool)
        self.numel = np.zeros((capacity, points), dtype=np.float64)
        self.count = 0  # rows filled
        self._rows = self.values[:, :width].unbind(0) if width else None  # a view per row, made once

    def row(self) -> torch.Tensor:
        """The next row to fill (a view of the device buffer)."""
        return self._rows[self.count] if self._rows is not None else self.values[self.count, :0]

    def commit(self, step: int, numel: list[int]) -> bool:
        """The next row (and ``written[count]``) is filled for ``step``; True when the buffer is full."""
        self.numel[self.count] = numel
        self.steps[self.count] = step
        self.count += 1
        return self.count == self.capacity

    def drain(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(values as float64, written, numel, steps) of the filled rows, copied to the host
        (the sync); the buffer is empty afterwards. None when nothing was recorded."""
        n = self.count
        if not n:
            return None
        raw = self.values[:n, : self.width].cpu().numpy().astype(np.float64)
        out = raw, self.written[:n].copy(), self.numel[:n].copy(), self.steps[:n].copy()
        self.count = 0
        return out


class HistogramBuffer:
    """Per-parameter gradient histograms (gradlab.recorder.histograms) of recorded steps."""

    def __init__(self, capacity: int, params: int, device: torch.device):
        self.capacity = capacity
        self.counts = torch.zeros((capacity, params, H.N_BINS), dtype=F32, device=device)
        self.steps = np.zeros(capacity, dtype=np.int64)
        self.count = 0

    def add(self, step: int, grads: list[torch.Tensor | None]) -> bool:
        """Histogram ``grads`` (None: no gradient) into the next row; True when full."""
        H.grad_histograms(grads, self.counts[self.count])
        self.steps[self.count] = step
        self.count += 1
        return self.count == self.capacity

    def drain(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(counts, steps) of the filled rows on the host; None when there are none."""
        n = self.count
        if not n:
            return None
        out = self.counts[:n].cpu().numpy(), self.steps[:n].copy()
        self.count = 0
        return out
