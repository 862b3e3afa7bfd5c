"""Pre-activation ResNets for CIFAR (He et al. 2016, "Identity Mappings", arXiv 1603.05027).

BN-ReLU-conv ordering inside each block, no ReLU after the addition, and a final BN-ReLU
before pooling. A 3x3 stem conv to 16 channels, three stages with 16/32/64 base widths:
basic blocks (two 3x3 convs) for preresnet110, bottleneck blocks (1x1, 3x3, 1x1 with 4x
expansion: 64/128/256 channels out) for preresnet164/1001. Where the shape changes the
shortcut is a 1x1 projection conv (no BN) fed by the block's first BN-ReLU, which both paths
share, as in the authors' code. Plain twins drop the shortcut and the addition.

``zero_init_residual`` zeroes the weight of each branch's last conv (there is no BN after it),
as timm's pre-activation ResNets do, so that a block with an identity shortcut starts as the
identity.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab.models.base import BN, CONV, FC, point, ResidualBlock, ZooModel
from gradlab.models.layers import conv1x1, conv3x3, init_weights

WIDTHS = (16, 32, 64)


class PreActBlock(ResidualBlock):
    """Shared forward of the pre-activation blocks: F(pre) + shortcut, pre = relu(bn1(x))."""

    expansion = 1
    relu_output = False  # the output is the sum itself (no ReLU after the addition)

    def _projection(self, in_channels: int, out_channels: int, stride: int, residual: bool):
        if residual and (stride != 1 or in_channels != out_channels):
            return conv1x1(in_channels, out_channels, stride)
        return None


class PreActBasicBlock(PreActBlock):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the shortcut."""

    main_layers = (("bn1", BN, True), ("conv1", CONV, False), ("bn2", BN, True), ("conv2", CONV, False))

    def __init__(self, in_channels: int, planes: int, stride: int, residual: bool):
        super().__init__(residual, relu_after_branch=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.branch_out = nn.Identity()
        self.shortcut = self._projection(in_channels, planes, stride, residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.branch_out(self.conv2(F.relu(self.bn2(out))))
        if not self.residual:
            return out
        return out + (x if self.shortcut is None else self.shortcut(pre))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(PreActBlock):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1 (4x expansion), plus the shortcut."""

    expansion = 4
    main_layers = (
        ("bn1", BN, True), ("conv1", CONV, False),
        ("bn2", BN, True), ("conv2", CONV, False),
        ("bn3", BN, True), ("conv3", CONV, False),
    )

    def __init__(self, in_channels: int, planes: int, stride: int, residual: bool):
        super().__init__(residual, relu_after_branch=False)
        out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv1x1(in_channels, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_channels)
        self.branch_out = nn.Identity()
        self.shortcut = self._projection(in_channels, out_channels, stride, residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.branch_out(self.conv3(F.relu(self.bn3(out))))
        if not self.residual:
            return out
        return out + (x if self.shortcut is None else self.shortcut(pre))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


class PreActResNet(ZooModel):
    """Pre-activation ResNet (``residual=True``) or its plain twin, ``n`` blocks per stage."""

    arch = "preact"

    def __init__(
        self,
        n: int,
        bottleneck: bool,
        residual: bool = True,
        num_classes: int = 10,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ):
        super().__init__(residual)
        block = PreActBottleneck if bottleneck else PreActBasicBlock
        self.conv1 = conv3x3(in_channels, WIDTHS[0])
        stages, width = [], WIDTHS[0]
        for i, planes in enumerate(WIDTHS):
            blocks = []
            for j in range(n):
                blocks.append(block(width, planes, 2 if (i > 0 and j == 0) else 1, residual))
                width = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.final_bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)
        init_weights(self)
        self._finish(zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.final_bn(x))
        return self.fc(x.mean((2, 3)))

    def stem_points(self):
        return [point("conv1", CONV)]

    def head_points(self):
        return [point("final_bn", BN, relu_after=True), point("fc", FC)]
