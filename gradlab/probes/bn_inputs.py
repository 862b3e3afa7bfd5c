"""The statistics of a BatchNorm's input, read from the batch statistics BatchNorm computed.

In training, BatchNorm computes every channel's mean and ``1/sqrt(var + eps)`` of its input
over the whole batch, and saves both for backward. The input's sum and norm follow exactly:

    sum(x)   = (numel / C) * sum_c mean_c
    ||x||^2  = (numel / C) * sum_c (var_c + mean_c^2),   var_c = invstd_c^-2 - eps

So a probe point whose output goes only to a BatchNorm (``ProbePoint.bn_next``: every conv
of the zoo's BatchNorm networks except the last of a pre-activation branch and its stem)
gets act_mean and act_std over the whole batch instead of a sample, without a pass over its
data, and with neither a hook nor a sample copy of its own. All the points of a step are
derived together in ``step()``, in about fifteen kernels. (Its dL/dh comes from the same
BatchNorm's backward node, :func:`bn_node`, whose first gradient input it is.)

The saved statistics are read from the output's ``grad_fn`` (``_saved_result1``/``2``).
Their meaning is checked once per backward-node type, against a direct computation on the
first input that uses it; a type that fails the check, or an unknown one (SyncBatchNorm, a
compiled region), makes the recorder fall back to reducing the input itself.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gradlab.probes.reductions import F32

__all__ = ["BNInputs", "bn_node", "is_batchnorm"]

# backward node -> the attribute holding eps (the mean and invstd are _saved_result1 and 2)
_EPS_ATTR = {
    "NativeBatchNormBackward0": "_saved_eps",
    "CudnnBatchNormBackward0": "_saved_epsilon",
    "MiopenBatchNormBackward0": "_saved_epsilon",
}
MAX_PLANS = 16


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


def _check(x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, eps: float) -> bool:
    """Do (mean, invstd) describe x's channels over the whole batch? (once per node type)"""
    with torch.no_grad():
        per_channel = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
        var, mu = torch.var_mean(per_channel, dim=1, correction=0)
        var_saved = invstd.double().pow(-2) - eps
        scale = var.abs().max().clamp_min(1e-12)
        return bool(
            torch.allclose(mean.double(), mu, rtol=1e-3, atol=1e-4 * scale.sqrt().item())
            and torch.allclose(var_saved, var, rtol=1e-3, atol=1e-4 * scale.item())
        )


class BNInputs:
    """One recorded step's BatchNorm inputs and the columns their sums and norms fill."""

    def __init__(self, device: torch.device):
        self.device = device
        self._valid: dict[str, bool] = {}
        self._plans: dict[tuple, tuple] = {}
        self.clear()

    def clear(self) -> None:
        # (sum columns, norm columns) -> (mean, invstd, (channels, eps, numel, sum cols, norm cols))
        self._queued: dict[tuple, tuple] = {}

    def discard(self, sum_cols: list[int], norm_cols: list[int]) -> None:
        """Forget what :meth:`add` queued for these columns (they were measured otherwise)."""
        self._queued.pop((tuple(sum_cols), tuple(norm_cols)), None)

    def add(self, x: torch.Tensor, y: torch.Tensor, sum_cols: list[int], norm_cols: list[int]) -> bool:
        """Queue the sum and norm of x, the input of the BatchNorm whose output is y; False
        when y's backward node does not give x's batch statistics (reduce x instead). A
        later call for the same columns (the next micro-batch) replaces an earlier one."""
        node = y.grad_fn
        name = type(node).__name__ if node is not None else ""
        eps_attr = _EPS_ATTR.get(name)
        if eps_attr is None or x.dim() < 2 or self._valid.get(name) is False:
            return False
        try:
            mean, invstd, eps = node._saved_result1, node._saved_result2, float(getattr(node, eps_attr))
        except (AttributeError, RuntimeError):
            return False
        if mean.shape != (x.shape[1],) or invstd.shape != mean.shape:
            return False
        if name not in self._valid:
            self._valid[name] = _check(x, mean, invstd, eps)
            if not self._valid[name]:
                return False
        cols = (tuple(sum_cols), tuple(norm_cols))
        self._queued[cols] = (mean, invstd, (x.shape[1], eps, x.numel(), *cols))
        return True

    def write(self, row: torch.Tensor) -> list[int]:
        """Derive every queued input's sum and norm into ``row``; returns the columns set."""
        if not self._queued:
            return []
        queued = list(self._queued.values())
        key = tuple(layout for *_, layout in queued)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            plan = self._plans[key] = self._plan(list(key))
        eps, segment, scale, src, dst, cols = plan
        mean = torch.cat([m for m, *_ in queued]).to(F32)
        var = torch.cat([v for _, v, _ in queued]).to(F32).pow_(-2).sub_(eps).clamp_(min=0)
        per_channel = torch.stack([mean, var.add_(mean.square())])  # E[x], E[x^2] per channel
        acc = torch.zeros((2, len(queued)), dtype=F32, device=self.device)
        acc.index_add_(1, segment, per_channel).mul_(scale)  # sum(x), sum(x^2) per input
        acc[1].sqrt_()
        row.index_copy_(0, dst, acc.view(-1).index_select(0, src))
        return cols

    def _plan(self, layout: list[tuple]) -> tuple:
        n = len(layout)
        channels = [c for c, *_ in layout]
        as_tensor = lambda v, dt: torch.tensor(v, dtype=dt, device=self.device)  # noqa: E731
        eps = torch.cat([torch.full((c,), e, dtype=F32) for c, e, *_ in layout]).to(self.device)
        segment = torch.repeat_interleave(as_tensor(list(range(n)), torch.long), as_tensor(channels, torch.long))
        scale = as_tensor([numel / c for c, _, numel, *_ in layout], F32)
        src, dst = [], []
        for i, (*_, sum_cols, norm_cols) in enumerate(layout):
            src += [i] * len(sum_cols) + [n + i] * len(norm_cols)
            dst += [*sum_cols, *norm_cols]
        return eps, segment, scale, as_tensor(src, torch.long), as_tensor(dst, torch.long), dst
