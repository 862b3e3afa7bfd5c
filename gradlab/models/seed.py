"""The small residual block of the seed article, for MNIST-sized inputs (1x28x28).

Block: conv5x5(C -> 30, padding 2) -> ReLU -> conv3x3(30 -> C, padding 1) = F(x), output
relu(F(x) + x); the plain twin outputs relu(F(x)). No BatchNorm, so convs carry biases.

Network (``seedresnet{k}`` / ``seedplain{k}``): a 3x3 stem conv to C = 16 channels + ReLU
(the block needs C channels on both sides, and 16 keeps it cheap), k blocks at full
resolution, global average pooling, a linear classifier. Depth = 1 + 2k + 1.
``zero_init_residual`` zeroes the last conv (weight and bias): the block is then relu(x),
which is the identity on the non-negative stem output.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab.models.base import CONV, FC, point, ResidualBlock, ZooModel
from gradlab.models.layers import init_weights

CHANNELS = 16
HIDDEN = 30


class SeedBlock(ResidualBlock):
    main_layers = (("conv1", CONV, True), ("conv2", CONV, False))

    def __init__(self, channels: int, residual: bool, hidden: int = HIDDEN):
        super().__init__(residual, relu_after_branch=not residual)
        self.conv1 = nn.Conv2d(channels, hidden, 5, padding=2)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)
        self.branch_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch_out(self.conv2(F.relu(self.conv1(x))))
        if self.residual:
            out = out + x
        return F.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)


class SeedNet(ZooModel):
    """Stem conv, ``k`` seed blocks (residual or plain), global average pool, fc."""

    arch = "seed"

    def __init__(
        self,
        k: int,
        residual: bool = True,
        num_classes: int = 10,
        in_channels: int = 1,
        zero_init_residual: bool = False,
    ):
        super().__init__(residual)
        self.conv1 = nn.Conv2d(in_channels, CHANNELS, 3, padding=1)
        self.layers = nn.Sequential(*[SeedBlock(CHANNELS, residual) for _ in range(k)])
        self.fc = nn.Linear(CHANNELS, num_classes)
        init_weights(self)
        self._finish(zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.conv1(x)))
        return self.fc(x.mean((2, 3)))

    def stem_points(self):
        return [point("conv1", CONV, relu_after=True)]

    def head_points(self):
        return [point("fc", FC)]
