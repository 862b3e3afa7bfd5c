"""ImageNet ResNets (He et al. 2015, Table 1) and their plain twins.

State dicts are key-for-key compatible with ``torchvision.models.resnet18 … resnet152``:
conv1/bn1 stem (7x7 stride 2, then 3x3 max-pool), layer1…layer4 with 64/128/256/512 base
widths, ``downsample`` = 1x1 conv + BN projection where the shape changes (option B), fc.
Bottleneck blocks put the stride on the 3x3 conv, as torchvision does ("ResNet v1.5").
Plain twins are the same networks without shortcuts: no ``downsample`` modules, so their
state dicts are the ResNet's minus the downsample keys.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab.models.base import BN, CONV, FC, point, ResidualBlock, ZooModel
from gradlab.models.layers import conv1x1, conv3x3, init_weights

WIDTHS = (64, 128, 256, 512)


def _downsample(in_channels: int, out_channels: int, stride: int, residual: bool):
    if residual and (stride != 1 or in_channels != out_channels):
        return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    return None


class BasicBlock(ResidualBlock):
    """conv3x3-BN-ReLU-conv3x3-BN, then relu(F(x) + shortcut(x)); plain twin: relu(F(x))."""

    expansion = 1
    shortcut_attr = "downsample"
    main_layers = (("conv1", CONV, False), ("bn1", BN, True), ("conv2", CONV, False), ("bn2", BN, False))

    def __init__(self, in_channels: int, planes: int, stride: int, residual: bool):
        super().__init__(residual, relu_after_branch=not residual)
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.branch_out = nn.Identity()
        self.downsample = _downsample(in_channels, planes, stride, residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.branch_out(self.bn2(self.conv2(out)))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResidualBlock):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN (4x expansion), then add and ReLU."""

    expansion = 4
    shortcut_attr = "downsample"
    main_layers = (
        ("conv1", CONV, False), ("bn1", BN, True),
        ("conv2", CONV, False), ("bn2", BN, True),
        ("conv3", CONV, False), ("bn3", BN, False),
    )

    def __init__(self, in_channels: int, planes: int, stride: int, residual: bool):
        super().__init__(residual, relu_after_branch=not residual)
        out_channels = planes * self.expansion
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.branch_out = nn.Identity()
        self.downsample = _downsample(in_channels, out_channels, stride, residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.branch_out(self.bn3(self.conv3(out)))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class ImageNetResNet(ZooModel):
    """ImageNet ResNet (``residual=True``) or plain twin with ``layers`` blocks per stage."""

    arch = "imagenet"

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        bottleneck: bool,
        residual: bool = True,
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ):
        super().__init__(residual)
        block = Bottleneck if bottleneck else BasicBlock
        self.conv1 = nn.Conv2d(in_channels, WIDTHS[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        stages, width = [], WIDTHS[0]
        for i, (planes, count) in enumerate(zip(WIDTHS, layers, strict=True)):
            blocks = []
            for j in range(count):
                blocks.append(block(width, planes, 2 if (i > 0 and j == 0) else 1, residual))
                width = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(width, num_classes)
        init_weights(self)
        self._finish(zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))

    def stem_points(self):
        return [point("conv1", CONV, bn_next=True), point("bn1", BN, relu_after=True)]

    def head_points(self):
        return [point("fc", FC)]
