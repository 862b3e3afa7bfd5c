"""CIFAR ResNets and their plain twins (He et al. 2015, §4.2).

6n+2 weighted layers: a 3x3 conv to 16 channels, three stages of n basic blocks with
16/32/64 channels (stride 2 at the start of stages 2 and 3), global average pooling and a
linear classifier. Shortcut options at stage transitions (§3.3):

    A  parameter-free: subsample by 2 and zero-pad the new channels (the paper's CIFAR nets)
    B  1x1 conv + BN projection where the shape changes, identity elsewhere
    C  1x1 conv + BN projection on every block

The plain twin has exactly the same modules minus the shortcut (with option A: the same
parameters, name for name).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab.models.base import BN, CONV, FC, Point, ResidualBlock, ZooModel
from gradlab.models.layers import conv1x1, conv3x3, init_weights

SHORTCUTS = ("A", "B", "C")
WIDTHS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option A: subsample with the given stride and append zero channels."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


def make_shortcut(in_channels: int, out_channels: int, stride: int, option: str) -> nn.Module:
    changes_shape = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and changes_shape):
        return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    if option == "A" and changes_shape:
        return PadShortcut(out_channels - in_channels, stride)
    return nn.Identity()


class BasicBlock(ResidualBlock):
    """conv3x3-BN-ReLU-conv3x3-BN, then relu(F(x) + shortcut(x)); plain twin: relu(F(x))."""

    main_layers = (("conv1", CONV, False), ("bn1", BN, True), ("conv2", CONV, False), ("bn2", BN, False))

    def __init__(self, in_channels: int, out_channels: int, stride: int, residual: bool, shortcut: str):
        super().__init__(residual, relu_after_branch=not residual)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.branch_out = nn.Identity()
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.branch_out(self.bn2(self.conv2(out)))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class CifarResNet(ZooModel):
    """A CIFAR ResNet (``residual=True``) or plain net with ``n`` blocks per stage."""

    arch = "cifar"

    def __init__(
        self,
        n: int,
        residual: bool = True,
        shortcut: str = "A",
        num_classes: int = 10,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ):
        super().__init__(residual)
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, not {shortcut!r}")
        self.shortcut_option = shortcut
        self.conv1 = conv3x3(in_channels, WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        stages, width = [], WIDTHS[0]
        for i, out in enumerate(WIDTHS):
            blocks = [
                BasicBlock(width if j == 0 else out, out, 2 if (i > 0 and j == 0) else 1, residual, shortcut)
                for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            width = out
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        init_weights(self)
        self._finish(zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))

    def stem_points(self):
        return [Point("conv1", CONV, bn_next=True), Point("bn1", BN, relu_after=True)]

    def head_points(self):
        return [Point("fc", FC)]
