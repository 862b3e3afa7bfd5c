"""The gradient norms at a BatchNorm, ||dL/dy|| and ||dL/dx||, from one pass over dL/dy.

In training, a BatchNorm's backward gives, per channel c over its ``M = numel / C`` values,
``S1_c = sum(dy)`` (the bias gradient) and ``S3_c = sum(dy * xhat)`` (the weight gradient),
and computes ``dx = gamma * invstd * (dy - S1/M - xhat * S3/M)``. With ``S2_c = sum(dy^2)``,
``sum(xhat) = 0`` and ``sum(xhat^2) = M * r_c`` (``r_c = var_c * invstd_c^2 = 1 - eps *
invstd_c^2``), the norm of dx follows without reading it:

    ||dx_c||^2 = (gamma_c * invstd_c)^2 * (S2_c - S1_c^2 / M - S3_c^2 * (2 - r_c) / M)
    ||dy||^2   = sum_c S2_c

So a BatchNorm's backward hook (gradlab.recorder.bn_stats.bn_node) reads dL/dy once, for its
per-example, per-channel norms (one kernel), and keeps the weight and bias gradients (no
kernel: autograd then copies them into ``.grad`` instead of taking them, in C++, which is
cheaper than any kernel launched from the hook); ``write()`` derives every queued
BatchNorm's two norms together at step(), in about fifteen kernels. This is the recorder's
in-hook path (the CPU default): it halves the whole-batch gradient reads at a BatchNorm.
The deferred path keeps dL/dx instead, as its fused norm costs no launch of its own.

On a CPU with the fused kernels (gradlab.recorder.fused_bn), once a BatchNorm's formula has
held, the hook keeps dL/dy itself (a reference: up to ``KEEP_NUMEL`` elements each and
``keep_bytes`` a step, the extra memory until step()) and write()'s one kernel call reads
every kept dL/dy with the other vectors: in a short step the per-hook reduction cost more
than the one read at step() (docs/recorder.md, "dL/dy kept at a BatchNorm").

The difference loses precision where ||dx_c|| << ||dy_c|| (dL/dy nearly constant, or
nearly proportional to the normalised input, over a channel): about 1e-7 * ||dy_c||^2
absolute, in float32, like act_std's sum-of-squares derivation. Every float32 norm in the
recorder (PyTorch's, accumulated without scaling) loses precision once the squares of the
elements leave float32's normal range (|dL/dh| below ~1e-19) and reads 0 below ~1e-23;
the derived ||dx|| more so, as its difference amplifies the rounding (docs/recorder.md,
"Precision").

The formula is checked once per BatchNorm, in its first hook, against dL/dx itself; a
BatchNorm without affine parameters, a dL/dy that is not contiguous (channels_last), or a
failed check leaves the recorder taking both norms directly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gradlab.recorder import fused_bn, fused_tensors, native
from gradlab.recorder.bn_stats import normalised_square
from gradlab.recorder.kept_grads import DEFAULT_GRAD_BYTES
from gradlab.recorder.plans import cached_plan, column_slots, put_norms
from gradlab.recorder.reductions import F32, norm

__all__ = ["KEEP_NUMEL", "BNGrads"]

KEEP_NUMEL = 1 << 18  # elements of a dL/dy kept for write() on a CPU (1 MB in float32)


def _dx_square(s2, s1, s3, gamma, invstd, eps, m):
    """Per channel ||dx_c||^2 from the per-channel sums (float32; eps and m: scalars or per channel)."""
    scale = invstd.square() * gamma.square()
    inner = s2 - (s1.square() + s3.square() * (2 - normalised_square(invstd, eps))) / m
    return scale * inner.clamp_(min=0)


class BNGrads:
    """One recorded step's BatchNorm gradients and the columns their norms fill.

    ``where``: BatchNorm key -> (offset, channels) of its gamma in the step's stacked gammas
    and betas (gradlab.recorder.bn_stats.BNStats.gamma_beta)."""

    def __init__(self, device: torch.device, where: dict):
        self.device = device
        self.where = where
        self._valid: dict[object, bool] = {}  # BatchNorm key -> the formula held on its first backward
        self.fused = device.type == "cpu"  # derived in one call of the fused CPU kernel where it can
        self._plans: dict[tuple, tuple] = {}
        self._fused_plans: dict[tuple, tuple] = {}
        self.queued: list[tuple] = []  # (key, what write() derives from), one per BatchNorm backward
        self._gamma_beta: torch.Tensor | None = None
        self.keep_numel = KEEP_NUMEL  # (a CPU, the kernels on) dL/dy of at most these elements is kept
        self.keep_bytes = DEFAULT_GRAD_BYTES  # ... while those kept this step stay within this
        self._kept = 0

    def clear(self) -> None:
        self.queued.clear()
        self._gamma_beta = None
        self._kept = 0

    def add(self, key, grad_inputs, dy: torch.Tensor, saved, gamma_beta, dy_cols: list[int], dx_col: int) -> bool:
        """Queue BatchNorm ``key``'s backward (``grad_inputs``: dx, dgamma, dbeta; ``saved``:
        its forward's gradlab.recorder.bn_stats.saved_stats; ``gamma_beta``: the forward's
        stacked gammas and betas). ``||dy||`` goes to ``dy_cols`` (which may still grow until
        write), ``||dx||`` to ``dx_col``. False: take both norms directly. A later call with
        the same key (the step's next micro-batch) is queued too: write() takes the norm over
        all of them."""
        valid = self._valid.get(key)
        if valid is False or saved is None or gamma_beta is None or len(grad_inputs) < 3 or torch.is_grad_enabled():
            return False  # (grad mode is on in a backward with create_graph: leave that graph alone)
        dx, dgamma, dbeta = grad_inputs[:3]
        c = dy.shape[1] if dy.dim() >= 2 else -1
        where = self.where.get(key)
        if dgamma is None or dbeta is None or dx is None or where is None or where[1] != c or not dy.is_contiguous():
            return False
        _, _, invstd, eps = saved
        m = dy.numel() / c
        if valid and self._keepable(dy):  # read at write(), by the call that derives every BatchNorm's norms
            dims = (c, m, dy.numel() // (dy.shape[0] * c))
            if self.keep(key, dy, dgamma, dbeta, invstd, eps, dims, dy_cols, dx_col, gamma_beta):
                return True
        rows = norm(dy.view(dy.shape[0], c, -1), dim=2)  # (float32, from any float dtype)
        if valid is None:
            sums = torch.stack((dgamma, dbeta)).float()
            valid = self._check(rows, sums, gamma_beta[0, where[0] : where[0] + c], invstd, eps, m, dx)
            if valid is None:
                return False
            self._valid[key] = valid
            if not valid:
                return False
        self._queue(key, rows, dgamma, dbeta, invstd, eps, (c, m, 1), dy_cols, dx_col, gamma_beta)
        return True

    def _keepable(self, dy: torch.Tensor) -> bool:
        """Whether dL/dy may be kept for write() (a reference: its memory outlives the
        backward until step()) rather than reduced to rows here."""
        return (self.fused and dy.numel() <= self.keep_numel and fused_tensors.qualifies(dy)
                and native.library() is not None)  # fmt: skip

    def keep(self, key, dy, dgamma, dbeta, invstd, eps, dims: tuple, dy_cols: list[int], dx_col: int, gamma_beta) -> bool:
        """Queue BatchNorm ``key``'s backward with dL/dy itself (``dims``: its channels, values
        per channel and values per example and channel), for a BatchNorm whose formula held;
        False, nothing queued, past ``keep_bytes`` this step. (Also the lean hooks' call:
        gradlab.recorder.fused_taps.)"""
        size = dy.untyped_storage().nbytes()  # (a view keeps its whole storage)
        if self._kept + size > self.keep_bytes:
            return False
        self._kept += size
        self._queue(key, dy, dgamma, dbeta, invstd, eps, dims, dy_cols, dx_col, gamma_beta)
        return True

    def _queue(self, key, first, dgamma, dbeta, invstd, eps, dims: tuple, dy_cols, dx_col, gamma_beta) -> None:
        """Queue a backward for write(): ``first`` the rows of dL/dy or dL/dy itself (``dims``:
        channels, values per channel, values per example and channel: 1 for rows)."""
        c, m, inner = dims
        # (holding dgamma and dbeta makes autograd copy them into .grad: cheaper than a kernel here)
        self.queued.append((key, (first, dgamma, dbeta, invstd, c, eps, m, dy_cols, dx_col, inner)))
        self._gamma_beta = gamma_beta

    def derives(self, key) -> bool:
        """Whether BatchNorm ``key``'s formula held on its first backward."""
        return self._valid.get(key) is True

    @staticmethod
    def _check(rows, sums, gamma, invstd, eps, m, dx) -> bool | None:
        """Does the formula give ||dx||, within 1e-3 (and 1e-6 of the scale of its terms)?
        None: no verdict (a non-finite gradient)."""
        s2 = rows.square().sum(0)
        invstd = invstd.to(F32)
        derived = _dx_square(s2, sums[1], sums[0], gamma, invstd, eps, m).sum().sqrt().item()
        direct = torch.linalg.vector_norm(dx, dtype=torch.float64).item()
        scale = (invstd.square() * gamma.square() * s2).sum().sqrt().item()
        if not (math.isfinite(direct) and math.isfinite(scale)):
            return None
        return abs(derived - direct) <= 1e-3 * direct + 1e-6 * scale

    def write(self, row: torch.Tensor) -> list[int]:
        """Derive every queued BatchNorm's ||dy|| and ||dx|| into ``row``; returns the columns
        set (a column several micro-batches fill gets the norm over all of them)."""
        queued = [q for _, q in self.queued]
        if not queued:
            return []
        key = tuple((k, (q[0].shape[0], q[9]), *q[4:7], tuple(q[7]), q[8]) for k, q in self.queued)
        if self.fused:
            cols = self._write_fused(row, queued, key)
            if cols is not None:
                return cols
        plan = cached_plan(self._plans, key, lambda: self._plan(key))
        segment, eps, m, pick, src, slot, dst, cols = plan
        rows = [q[0] if q[9] == 1 else norm(q[0].view(q[0].shape[0], q[4], -1), dim=2) for q in queued]  # (dL/dy kept)
        if len({r.shape[0] for r in rows}) == 1:  # one batch size: the rows line up
            s2 = torch.cat(rows, dim=1).square_().sum(0)
        else:
            s2 = torch.cat([r.square().sum(0) for r in rows])
        sums = torch.cat([q[1] for q in queued] + [q[2] for q in queued]).to(F32).view(2, -1)
        invstd = torch.cat([q[3] for q in queued]).to(F32)
        dx2 = _dx_square(s2, sums[1], sums[0], self._gamma_beta[0].index_select(0, pick), invstd, eps, m)
        acc = torch.zeros((2, len(queued)), dtype=F32, device=self.device)
        acc.index_add_(1, segment, torch.stack([s2, dx2])).sqrt_()
        put_norms(row, dst, acc.view(-1).index_select(0, src), slot)  # (micro-batches: the norm over all of them)
        return cols

    def _write_fused(self, row: torch.Tensor, queued: list[tuple], key: tuple) -> list[int] | None:
        """write() in one call of the fused CPU kernel (gradlab.recorder.fused_bn); None where
        the step's tensors do not qualify (nothing written)."""
        channels, eps, m, offsets, shapes, scatter = cached_plan(self._fused_plans, key, lambda: self._fused_plan(key))
        parts = list(zip(*(q[:4] for q in queued)))  # rows (or dL/dy), dgammas, dbetas, invstds
        totals = fused_bn.grad_totals(row, *parts[:3], self._gamma_beta, offsets, parts[3], channels, eps, m, *shapes)
        return None if totals is None else scatter.put(totals, row)

    def _fused_plan(self, layout: tuple) -> tuple:
        targets = [(2 * i + part, col, True)
                   for i, (*_, dy_cols, dx_col) in enumerate(layout) for part, cols in ((0, dy_cols), (1, [dx_col]))
                   for col in cols]  # fmt: skip
        return (np.asarray([q[2] for q in layout], dtype=np.int64), np.asarray([q[3] for q in layout], dtype=np.float64),
                np.asarray([q[4] for q in layout], dtype=np.float64),
                np.asarray([self.where[q[0]][0] for q in layout], dtype=np.int64),
                tuple(np.asarray(part, dtype=np.int64) for part in zip(*(q[1] for q in layout))),  # examples, inners
                fused_bn.Scatter(targets))  # fmt: skip

    def _plan(self, layout: tuple) -> tuple:
        n = len(layout)
        as_tensor = lambda v, dt: torch.tensor(v, dtype=dt, device=self.device)  # noqa: E731
        segment, eps, m, pick, src, dst = [], [], [], [], [], []
        for i, (key, _, c, e, mi, dy_cols, dx_col) in enumerate(layout):
            segment += [i] * c
            eps += [e] * c
            m += [mi] * c
            start = self.where[key][0]
            pick += range(start, start + c)
            src += [i] * len(dy_cols) + [n + i]
            dst += [*dy_cols, dx_col]
        cols, slot = column_slots(dst)
        return (
            as_tensor(segment, torch.long),
            as_tensor(eps, F32),
            as_tensor(m, F32),
            as_tensor(pick, torch.long),
            as_tensor(src, torch.long),
            None if slot is None else as_tensor(slot, torch.long),
            as_tensor(cols, torch.long),
            cols,
        )
