"""What the lean hooks kept in a recorded step, reduced by one kernel call at ``step()``.

The lean hooks (gradlab.recorder.fast_taps) keep each planned point's output and retain its
gradient; between steps nothing about them changes but the tensors. On a CPU, where a short
step's ``step()`` costs Python per tensor more than arithmetic, a step whose every kept
tensor came through them (a transformer's, once learned) skips the general lists
(gradlab.recorder.deferred, kept_grads): ``step()`` reads each output's version, its
gradient and the two addresses, and one call of the fused kernel (gradlab.recorder.native,
``planned_stats``) writes every sum, norm, count and gradient norm straight into the step's
row, with the loops the general path's kernel runs, so with its values.

Anything the plan does not describe hands the entries to the general lists, in call order,
and the step takes the general path: a general hook's call in the same step (handed over
before it, so the order of calls is kept), a point met twice (micro-batches), an output
changed in place, a missing, non-contiguous or non-CPU tensor, a dtype or a reduction the
kernel lacks.
"""

from __future__ import annotations

import numpy as np
import torch

from gradlab.recorder import native
from gradlab.recorder.in_hook import FUSED_VALUES
from gradlab.recorder.plans import cached_plan
from gradlab.recorder.reductions import COUNT_UNIT, F32

__all__ = ["FastStep"]


class _Lane:
    """One sequence of plans, as the kernel takes it: per point its elements, its columns
    ([4, k]: sum, norm, count, gradient norm; -1 where not wanted) and the addresses read."""

    __slots__ = ("kernel", "count", "sample_numel", "grad_numel", "cols", "written", "grads", "samples",
                 "grad_addresses")

    def __init__(self, kernel, plans: list):
        self.kernel = kernel  # (held: the library stays loaded for as long as the lane)
        k = self.count = len(plans)
        self.sample_numel = np.asarray([int(np.prod(p.meta[0], dtype=np.int64)) for p in plans], dtype=np.int64)
        self.grad_numel = np.asarray([int(np.prod(p.shape, dtype=np.int64)) for p in plans], dtype=np.int64)
        self.cols = np.full((4, k), -1, dtype=np.int64)
        for i, p in enumerate(plans):
            for red, col in p.todo:  # (for a column asked twice, the last wins: as the general path)
                self.cols[FUSED_VALUES[red], i] = col
            if p.grad_cols is not None:
                self.cols[3, i] = p.grad_cols[0]
        self.written = [int(c) for c in self.cols.ravel() if c >= 0]
        self.grads = [p.grad_cols is not None for p in plans]
        self.samples = np.zeros(k, dtype=np.int64)  # this step's addresses (filled at finish())
        self.grad_addresses = np.zeros(k, dtype=np.int64)

    @staticmethod
    def fits(plans: list) -> bool:
        """Whether one kernel call can take these plans: each once, float32, reductions it has."""
        return (len({id(p) for p in plans}) == len(plans) and all(p.dtype is F32 for p in plans)
                and all(red in FUSED_VALUES for p in plans for red, _ in p.todo))  # fmt: skip


class FastStep:
    """The lean hooks' entries of a recorded step and, where they allow, their one-call reduction."""

    def __init__(self, device: torch.device):
        self.on = device.type == "cpu"  # (on a GPU the general path stacks them: a few launches)
        self.entries: list[tuple] = []  # (plan, output, its version) in call order; cleared in place
        self._lanes: dict[tuple, _Lane | tuple] = {}  # by the plans' sequence (a few: plans.MAX_PLANS)
        self._ready: _Lane | None = None  # the lane finish() filled, for write()
        self._columns: tuple[int, set[int]] = (0, set())  # (entries seen, their points' first columns)
        self._handed: set[int] = set()  # ... of the entries handed over this step

    def clear(self) -> None:
        self.entries.clear()  # (in place: the lean hooks hold its append)
        self._ready = None
        self._columns = (0, set())
        self._handed.clear()

    def holds(self, col: int) -> bool:
        """Whether a lean hook kept, this step, a point whose first activation or gradient
        column is ``col`` (its entry here, or handed over)."""
        seen, columns = self._columns
        if seen != len(self.entries):
            columns = set(_first_columns(self.entries))
            self._columns = (len(self.entries), columns)
        return col in columns or col in self._handed

    def take(self) -> list[tuple]:
        """The entries, handed to the general path (which then owns them)."""
        entries = self.entries[:]
        self.entries.clear()
        self._handed.update(_first_columns(entries))
        return entries

    def finish(self) -> bool:
        """Read this step's addresses; True when :meth:`write` can take every entry (else
        nothing is changed, and the caller hands them over)."""
        entries = self.entries
        if not self.on or not entries:
            return False
        key = tuple([e[0] for e in entries])
        lane = cached_plan(self._lanes, key, lambda: _lane(list(key)))
        if not lane:  # (): the kernel cannot take these plans
            return False
        samples, grad_addresses = lane.samples, lane.grad_addresses
        # (fused_tensors.qualifies, inline: the dtype is the plan's, float32; a gradient's is its output's)
        for i, ((_, h, version), grad) in enumerate(zip(entries, lane.grads)):
            if h._version != version or not h.is_contiguous() or not h.is_cpu:
                return False
            samples[i] = h.data_ptr()
            if grad:
                g = h.grad
                if g is None or not g.is_contiguous():
                    return False
                grad_addresses[i] = g.data_ptr()
        self._ready = lane
        return True

    def write(self, row: torch.Tensor) -> list[int]:
        """The values into ``row`` (float32, contiguous, CPU) after a :meth:`finish` that
        returned True; returns the columns set."""
        lane, self._ready = self._ready, None
        if lane is None:
            return []
        lane.kernel(lane.count, lane.samples.ctypes.data, lane.sample_numel.ctypes.data, lane.grad_addresses.ctypes.data,
                    lane.grad_numel.ctypes.data, lane.cols.ctypes.data, row.data_ptr(), COUNT_UNIT,
                    torch.get_num_threads())  # fmt: skip
        return lane.written


def _first_columns(entries: list[tuple]):
    """Each entry's point's first activation column and its gradient column."""
    return (c for plan, _, _ in entries for c in (plan.key, plan.grad_key))


def _lane(plans: list) -> _Lane | tuple:
    """The kernel's plan for this sequence of plans, or () where it cannot take them."""
    lib = native.library()
    return _Lane(lib.planned_stats, plans) if lib is not None and _Lane.fits(plans) else ()
