"""Convolution helpers, activations and the weight initialisation shared by every zoo model."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# the main path's nonlinearity (``act=``): ReLU as in the papers, or the saturating ones whose
# derivative (at most 1/4 for the sigmoid) makes gradients vanish with depth
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}
# Var(gamma * relu(x)) = 1 for x ~ N(0, 1): the ReLU of NF-ResNets (Brock et al. 2021, sec. 3)
RELU_GAMMA = math.sqrt(2 / (1 - 1 / math.pi))


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution, padding 1; no bias where a BatchNorm follows or precedes it."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias: bottleneck reductions/expansions and projection shortcuts."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def batch_norm(channels: int, norm: str) -> nn.Module | None:
    """A BatchNorm (``norm="bn"``) or nothing (``"none"``)."""
    return nn.BatchNorm2d(channels) if norm == "bn" else None


class WSConv2d(nn.Conv2d):
    """A convolution with scaled weight standardization (Brock, De & Smith 2021):
    ``W' = gain * (W - mean(W)) / (std(W) * sqrt(fan_in))`` per output channel, so that an
    input of unit variance gives an output of unit variance at any depth, without
    normalizing activations. ``gain`` is learnable (one per output channel)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        fan_in = w[0].numel()
        var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, correction=0)
        w = (w - mean) * torch.rsqrt(torch.clamp(var * fan_in, min=1e-4)) * self.gain
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def init_weights(model: nn.Module) -> None:
    """He et al. init as torchvision does it: Kaiming normal (fan_out, ReLU) for convs,
    zero conv biases, BatchNorm weight 1 and bias 0. Linear layers keep PyTorch's default."""
    for m in model.modules():
        if getattr(getattr(m, "weight", None), "is_meta", False):
            continue  # meta tensors (shape-only builds for counting) hold no values to set
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
