"""Convolution helpers and the weight initialisation shared by every zoo model."""

from __future__ import annotations

import torch.nn as nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows or precedes it)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias: bottleneck reductions/expansions and projection shortcuts."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


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
