"""Batch normalization over the global batch of a data-parallel run.

With DistributedDataParallel each rank sees only its shard of the batch, so a plain
BatchNorm normalizes with per-shard statistics and the run is no longer the run with the
same global batch. ``nn.SyncBatchNorm`` fixes that on GPUs only (torch 2.14 raises
"SyncBatchNorm expected input tensor to be on GPU" for CPU tensors), so CPU/gloo runs use
:class:`CpuSyncBatchNorm`: the same computation as single-process BatchNorm, with the
per-channel sums taken over all ranks through a differentiable all-reduce (its backward
all-reduces the gradient, which is what the chain rule asks for).
Two collectives per layer per pass; meant for correctness tests and CPU clusters, not speed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the gradients (each rank's
    output feeds that rank's loss). torch.distributed.nn.functional.all_reduce does the
    same but is deprecated in torch 2.14 without a differentiable replacement."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        return _summed(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _summed(grad)


def _summed(t: torch.Tensor) -> torch.Tensor:
    t = t.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(t)
    return t


def differentiable_all_reduce(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


# Exactly these types are converted; subclasses (e.g. frozen BN of a fine-tuned backbone,
# which normalizes with its fixed running statistics) are left alone.
PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the batch summed over all ranks.

    Outside training, or without an initialized process group of two or more ranks, it is
    plain BatchNorm. The state dict is BatchNorm's, key for key.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        view = (1, c) + (1,) * (x.dim() - 2)
        local = torch.full((1,), x.numel() // max(c, 1), dtype=x.dtype, device=x.device)
        sums = differentiable_all_reduce(torch.cat([x.sum(dims), local]))
        count = sums[c].detach()
        mean = sums[:c] / count
        centered = x - mean.view(view)
        var = differentiable_all_reduce((centered * centered).sum(dims)) / count  # two passes, like BatchNorm
        out = centered * torch.rsqrt(var + self.eps).view(view)
        if self.affine:
            out = out * self.weight.view(view) + self.bias.view(view)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * (count / (count - 1).clamp_min(1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        return out


def convert(model: nn.Module, device: torch.device) -> tuple[nn.Module, str | None]:
    """Replace every plain BatchNorm of ``model`` (in place, before it moves to ``device``)
    by a synchronized one with the same state: ``nn.SyncBatchNorm`` for CUDA,
    :class:`CpuSyncBatchNorm` for CPU. Returns the model and the class name used (None
    when there was no BatchNorm to convert), for spec.json.
    """
    cls = nn.SyncBatchNorm if device.type == "cuda" else CpuSyncBatchNorm
    converted = False
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) not in PLAIN_BATCHNORMS:
                continue
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            if child.affine:
                new.weight.requires_grad_(child.weight.requires_grad)
                new.bias.requires_grad_(child.bias.requires_grad)
            new.train(child.training)
            setattr(parent, name, new)
            converted = True
    return model, cls.__name__ if converted else None
