"""A BatchNorm's input and output statistics, read from the batch statistics it computed.

In training, BatchNorm computes every channel's mean and ``invstd = 1/sqrt(var + eps)`` of
its input over the whole batch, and saves both for backward. With ``m = numel / C`` values
per channel, the sums and norms of its input x and of its output
``y = gamma * (x - mean) * invstd + beta`` follow exactly:

    sum(x)   = m * sum_c mean_c           ||x||^2 = m * sum_c (var_c + mean_c^2)
    sum(y)   = m * sum_c beta_c           ||y||^2 = m * sum_c (gamma_c^2 r_c + beta_c^2)

with ``var_c = invstd_c^-2 - eps`` and ``r_c = var_c * invstd_c^2`` (the mean square of the
normalised values, 1 unless a channel is nearly constant).

* Inputs: a probe point whose output goes only to a BatchNorm (``ProbePoint.bn_next``:
  every conv of the zoo's BatchNorm networks except the last of a pre-activation branch and
  its stem) gets act_mean and act_std over the whole batch, with neither a hook nor a pass
  over its data. (Its dL/dh comes from the same BatchNorm's backward node, :func:`bn_node`,
  whose first gradient input it is; in the recorder's hooks its norm is derived from
  dL/dy's: gradlab.recorder.bn_grads.)
* Outputs: a BatchNorm's own act_mean and act_std (and those of points that see the same
  tensor, such as the ``branch_out`` after a block's last BN) are those of the whole batch
  too, without a pass over the output. The recorder estimates its other activation
  statistics on a sample of ``n`` of the batch's ``N`` examples; so that the two combine
  (a zero count on the sample, a branch ratio against a sampled block input), an output's
  sum and norm are written scaled to the sample (``sum * n/N``, ``norm * sqrt(n/N)``) and
  counted with the sample's numel: the means and stds derived from them are the batch's.

All the values of a step are derived together in ``write()``, in about fifteen kernels for
the inputs and as many for the outputs. ``gamma`` and ``beta`` are copied at forward time
(one small kernel), so ``step()`` may come after ``opt.step()``.

The saved statistics are read from the output's ``grad_fn`` (``_saved_result1``/``2``).
Their meaning is checked once per backward-node type, against a direct computation on the
first input that uses it; an output's formula is checked once per BatchNorm (a subclass
may compute something else). A failed check, or an unknown node (SyncBatchNorm, a compiled
region), makes the recorder fall back to reducing the tensor itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from gradlab.recorder import fused_bn
from gradlab.recorder.plans import cached_plan
from gradlab.recorder.reductions import F32

__all__ = ["BNStats", "bn_node", "is_batchnorm", "normalised_square", "saved_stats"]

# backward node -> the attribute holding eps (the mean and invstd are _saved_result1 and 2)
_EPS_ATTR = {
    "NativeBatchNormBackward0": "_saved_eps",
    "CudnnBatchNormBackward0": "_saved_epsilon",
    "MiopenBatchNormBackward0": "_saved_epsilon",
}


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def bn_node(x: torch.Tensor, y: torch.Tensor):
    """The backward node of BatchNorm output ``y`` when its input edge leads straight to
    ``x``'s producer, so that its first gradient input is dL/dx (else None)."""
    node = y.grad_fn
    if node is None or x.grad_fn is None or type(node).__name__ not in _EPS_ATTR:
        return None
    edges = node.next_functions
    return node if edges and edges[0][0] is x.grad_fn and edges[0][1] == x.output_nr else None


def saved_stats(y: torch.Tensor, channels: int):
    """(node type, mean, invstd, eps) saved by the BatchNorm that produced ``y``, or None."""
    node = y.grad_fn
    if node is None:
        return None
    name = type(node).__name__ if node is not None else ""
    eps_attr = _EPS_ATTR.get(name)
    if eps_attr is None:
        return None
    try:
        mean, invstd, eps = node._saved_result1, node._saved_result2, float(getattr(node, eps_attr))
    except (AttributeError, RuntimeError):
        return None
    if mean.shape != (channels,) or invstd.shape != mean.shape:
        return None
    return name, mean, invstd, eps


def _per_channel(x: torch.Tensor) -> torch.Tensor:
    return x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()


def _check_input(x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, eps: float) -> bool:
    """Do (mean, invstd) describe x's channels over the whole batch? (once per node type)"""
    with torch.no_grad():
        var, mu = torch.var_mean(_per_channel(x), dim=1, correction=0)
        var_saved = invstd.double().pow(-2) - eps
        scale = var.abs().max().clamp_min(1e-12)
        return bool(
            torch.allclose(mean.double(), mu, rtol=1e-3, atol=1e-4 * scale.sqrt().item())
            and torch.allclose(var_saved, var, rtol=1e-3, atol=1e-4 * scale.item())
        )


def _check_output(y: torch.Tensor, gb: torch.Tensor, invstd: torch.Tensor, eps: float) -> bool:
    """Are y's per-channel mean and mean square what the formula gives? (once per BatchNorm)"""
    with torch.no_grad():  # reductions without a copy of y: this runs once for every BatchNorm
        dims, m = (0, *range(2, y.dim())), y.numel() / y.shape[1]
        mean = y.sum(dim=dims).double() / m
        square = torch.linalg.vector_norm(y, dim=dims).double().square() / m
        e1, e2 = _output_moments(gb.double(), invstd.double(), eps)
        scale = square.max().clamp_min(1e-12)
        return bool(
            torch.allclose(e1, mean, rtol=1e-3, atol=1e-4 * scale.sqrt().item())
            and torch.allclose(e2, square, rtol=1e-3, atol=1e-4 * scale.item())
        )


def _input_moments(mean: torch.Tensor, invstd: torch.Tensor, eps) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel E[x] and E[x^2] of a BatchNorm input."""
    var = invstd.pow(-2).sub_(eps).clamp_(min=0)
    return mean, var.add_(mean.square())


def normalised_square(invstd: torch.Tensor, eps) -> torch.Tensor:
    """Per channel r = var / (var + eps) = var * invstd^2: the mean square of a BatchNorm's
    normalised values (a new tensor; ``eps`` a scalar or per channel)."""
    r = invstd.square()
    var = r.reciprocal().sub_(eps).clamp_(min=0)
    return r.mul_(var)


def _output_moments(gb: torch.Tensor, invstd: torch.Tensor, eps) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel E[y] and E[y^2] of a BatchNorm output; ``gb`` stacks gamma and beta."""
    return gb[1], gb[0].square().mul_(normalised_square(invstd, eps)).add_(gb[1].square())


class _Derived:
    """One kind of queued tensors (BatchNorm inputs or outputs) and their write plans.

    A queued entry: (first, invstd, channels, eps, scale, sum columns, norm columns), where
    ``first`` is the per-channel mean (inputs) or the BatchNorm's key (outputs, whose
    gamma and beta are picked from the step's copy at ``where[key]``)."""

    def __init__(self, device: torch.device, moments, where: dict | None = None):
        self.device = device
        self.moments = moments  # (per-channel mean or [gamma; beta], invstd, eps) -> E[t], E[t^2]
        self.where = where
        self.fused = device.type == "cpu"  # derived in one call of the fused CPU kernel where it can
        self._plans: dict[tuple, tuple] = {}
        self._fused_plans: dict[tuple, tuple] = {}
        self.queued: dict[object, tuple] = {}

    def write(self, row: torch.Tensor, gamma_beta: torch.Tensor | None = None) -> list[int]:
        """Derive every queued tensor's sum and norm into ``row``; returns the columns set."""
        queued = [q for q in self.queued.values() if q[-1] or q[-2]]
        if not queued:
            return []
        key = tuple(
            (c, eps, scale, tuple(sums), tuple(norms), first if self.where is not None else None)
            for first, _, c, eps, scale, sums, norms in queued
        )
        if self.fused:
            cols = self._write_fused(row, queued, key, gamma_beta)
            if cols is not None:
                return cols
        plan = cached_plan(self._plans, key, lambda: self._plan(list(key)))
        eps, segment, scale, src, dst, cols, pick = plan
        if pick is None:
            first = torch.cat([a for a, *_ in queued]).to(F32)
        else:
            first = gamma_beta.index_select(1, pick)
        invstd = torch.cat([b for _, b, *_ in queued]).to(F32)
        e1, e2 = self.moments(first, invstd, eps)
        acc = torch.zeros((2, len(queued)), dtype=F32, device=self.device)
        acc.index_add_(1, segment, torch.stack([e1, e2])).mul_(scale)  # sum(t), sum(t^2) per tensor
        acc[1].sqrt_()
        row.index_copy_(0, dst, acc.view(-1).index_select(0, src))
        return cols

    def _write_fused(self, row: torch.Tensor, queued: list[tuple], key: tuple, gamma_beta) -> list[int] | None:
        """write() in one call of the fused CPU kernel (gradlab.recorder.fused_bn); None where
        the step's vectors do not qualify (nothing written)."""
        channels, eps, scale, offsets, scatter = cached_plan(self._fused_plans, key, lambda: self._fused_plan(queued))
        invstds = [b for _, b, *_ in queued]
        if offsets is None:
            totals = fused_bn.input_totals(row, [a for a, *_ in queued], invstds, channels, eps, scale)
        else:
            totals = fused_bn.output_totals(row, gamma_beta, offsets, invstds, channels, eps, scale)
        return None if totals is None else scatter.put(totals, row)

    def _fused_plan(self, queued: list[tuple]) -> tuple:
        as_array = lambda v, dt: np.asarray(v, dtype=dt)  # noqa: E731
        offsets = None if self.where is None else as_array([self.where[q[0]][0] for q in queued], np.int64)
        targets = [(2 * i + part, col, part == 1)
                   for i, (*_, sums, norms) in enumerate(queued) for part, cols in ((0, sums), (1, norms)) for col in cols]  # fmt: skip
        return (as_array([q[2] for q in queued], np.int64), as_array([q[3] for q in queued], np.float64),
                as_array([q[4] for q in queued], np.float64), offsets, fused_bn.Scatter(targets))  # fmt: skip

    def _plan(self, layout: list[tuple]) -> tuple:
        n = len(layout)
        as_tensor = lambda v, dt: torch.tensor(v, dtype=dt, device=self.device)  # noqa: E731
        eps = torch.cat([torch.full((c,), e, dtype=F32) for c, e, *_ in layout]).to(self.device)
        channels = as_tensor([c for c, *_ in layout], torch.long)
        segment = torch.repeat_interleave(as_tensor(list(range(n)), torch.long), channels)
        scale = as_tensor([s for _, _, s, *_ in layout], F32)
        src, dst = [], []
        for i, (_, _, _, sum_cols, norm_cols, _) in enumerate(layout):
            src += [i] * len(sum_cols) + [n + i] * len(norm_cols)
            dst += [*sum_cols, *norm_cols]
        pick = None
        if self.where is not None:
            pick = as_tensor([o + i for *_, k in layout for o, c in [self.where[k]] for i in range(c)], torch.long)
        return eps, segment, scale, as_tensor(src, torch.long), as_tensor(dst, torch.long), dst, pick


class BNStats:
    """One recorded step's BatchNorm inputs and outputs and the columns their sums and norms fill.

    ``batchnorms``: key -> BatchNorm module, for the outputs (keys as in :meth:`add_output`)."""

    def __init__(self, device: torch.device, batchnorms: dict | None = None):
        self.device = device
        self._valid: dict[str, bool] = {}  # node type -> its saved statistics mean what we think
        self._out_valid: dict[object, bool] = {}  # BatchNorm (key) -> its output follows the formula
        # every gamma, then every beta (ones and zeros without affine): copied in one kernel
        gammas, betas, self._where = [], [], {}
        offset = 0
        for key, bn in (batchnorms or {}).items():
            if isinstance(bn.weight, nn.parameter.UninitializedParameter):
                continue  # a lazy BatchNorm before its first forward: its outputs are reduced
            c = bn.num_features
            gammas.append(bn.weight if bn.weight is not None else torch.ones(c, device=device))
            betas.append(bn.bias if bn.bias is not None else torch.zeros(c, device=device))
            self._where[key] = (offset, c)
            offset += c
        self._gb_parts = gammas + betas
        self._inputs = _Derived(device, _input_moments)
        self._outputs = _Derived(device, _output_moments, self._where)
        self.clear()

    def clear(self) -> None:
        self._inputs.queued.clear()
        self._outputs.queued.clear()
        self._gb: torch.Tensor | None = None  # this step's gammas and betas

    @property
    def where(self) -> dict:
        """BatchNorm key -> (offset, channels) of its gamma and beta in :meth:`gamma_beta`."""
        return self._where

    def gamma_beta(self) -> torch.Tensor:
        """Every gamma (row 0) and beta (row 1), copied at this step's first call, at forward
        time (the optimizer may step before the recorder does)."""
        if self._gb is None:
            with torch.no_grad():
                self._gb = torch.cat(self._gb_parts).to(F32).view(2, -1)
        return self._gb

    def discard(self, sum_cols: list[int], norm_cols: list[int]) -> None:
        """Forget the input :meth:`add` queued for these columns (they were measured otherwise)."""
        self._inputs.queued.pop((tuple(sum_cols), tuple(norm_cols)), None)

    def add(self, x: torch.Tensor, saved, sum_cols: list[int], norm_cols: list[int]) -> bool:
        """Queue the sum and norm of x, the input of the BatchNorm that saved ``saved``
        (:func:`saved_stats` of its output); False when that does not give x's batch
        statistics (reduce x instead). A later call for the same columns (the next
        micro-batch) replaces an earlier one."""
        if saved is None or saved[1].shape != (x.shape[1],) or self._valid.get(saved[0]) is False:
            return False
        name, mean, invstd, eps = saved
        if name not in self._valid:
            self._valid[name] = _check_input(x, mean, invstd, eps)
            if not self._valid[name]:
                return False
        c = x.shape[1]
        cols = (tuple(sum_cols), tuple(norm_cols))
        self._inputs.queued[cols] = (mean, invstd, c, eps, x.numel() / c, sum_cols, norm_cols)
        return True

    def add_output(self, key, y: torch.Tensor, sample: float, saved) -> bool:
        """Queue the output y of BatchNorm ``key``, whose backward node saved ``saved``
        (:func:`saved_stats`; its columns come with :meth:`share`); False when it must be
        reduced itself. ``sample``: the fraction of the batch the recorder samples (n/N),
        to which the sum and norm are scaled. A later call with the same key (the next
        micro-batch) replaces an earlier one."""
        self._outputs.queued.pop(key, None)
        if saved is None or self._out_valid.get(key) is False:
            return False
        c = y.shape[1]
        if self._where.get(key, (0, -1))[1] != c:
            return False
        _, _, invstd, eps = saved
        self.gamma_beta()
        if key not in self._out_valid:
            offset = self._where[key][0]
            self._out_valid[key] = _check_output(y, self._gb[:, offset : offset + c], invstd, eps)
            if not self._out_valid[key]:
                return False
        self._outputs.queued[key] = (key, invstd, c, eps, y.numel() / c * sample, [], [])
        return True

    def share(self, key, sum_col: int, norm_col: int) -> None:
        """Columns (-1: none) that get the sum and norm of the output queued under ``key``."""
        self.share_into(self._outputs.queued[key], sum_col, norm_col)

    @staticmethod
    def share_into(queued: tuple, sum_col: int, norm_col: int) -> None:
        """:meth:`share` for the queued output itself (as :meth:`queues` holds it)."""
        _, _, _, _, _, sums, norms = queued
        if sum_col >= 0 and sum_col not in sums:
            sums.append(sum_col)
        if norm_col >= 0 and norm_col not in norms:
            norms.append(norm_col)

    def queues(self) -> tuple[dict, dict]:
        """The step's queued inputs and outputs, as :meth:`add` and :meth:`add_output` fill
        them, for the lean hooks that queue without asking (gradlab.recorder.fused_taps)."""
        return self._inputs.queued, self._outputs.queued

    def derives(self, key, node_name: str, channels: int) -> str:
        """Whether the input and the output of BatchNorm ``key`` (``channels`` wide, its
        backward node a ``node_name``) were found derivable from its saved statistics: the
        node's eps attribute if so, else "" (not known yet, or not)."""
        ok = (self._valid.get(node_name) is True and self._out_valid.get(key) is True
              and self._where.get(key, (0, -1))[1] == channels)  # fmt: skip
        return _EPS_ATTR.get(node_name, "") if ok else ""

    def write(self, row: torch.Tensor) -> list[int]:
        """Derive every queued input's and output's sum and norm into ``row``; returns the columns set."""
        return self._inputs.write(row) + self._outputs.write(row, self._gb)
