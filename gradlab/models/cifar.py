"""CIFAR ResNets and their plain twins (He et al. 2015, §4.2).

6n+2 weighted layers: a 3x3 conv to 16 channels, three stages of n basic blocks with
16/32/64 channels (stride 2 at the start of stages 2 and 3), global average pooling and a
linear classifier. Shortcut options at stage transitions (§3.3):

    A  parameter-free: subsample by 2 and zero-pad the new channels (the paper's CIFAR nets)
    B  1x1 conv + BN projection where the shape changes, identity elsewhere
    C  1x1 conv + BN projection on every block

The plain twin has exactly the same modules minus the shortcut (with option A: the same
parameters, name for name). The classic failure modes are options: ``norm="none"`` drops
every BatchNorm (the convs get biases; He init stays), ``act="tanh"|"sigmoid"`` replaces
the ReLUs of the main path; ``drop_path`` is stochastic depth (Huang et al. 2016).
:class:`CifarNet` is the layout the later remedies (gradlab.models.remedies) share.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab.models.base import BN, CONV, FC, point, ResidualBlock, ZooModel
from gradlab.models.layers import ACTIVATIONS, batch_norm, conv1x1, conv3x3, init_weights
from gradlab.models.probe_points import followed_by

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


def layers_of(conv_bn: list[tuple[str, str]], last_act: bool) -> tuple[tuple[str, str, bool], ...]:
    """``main_layers`` of a branch: (attribute, kind, act follows) for each present module,
    the flag set where the main path's activation comes next."""
    out = []
    for i, (attr, kind) in enumerate(conv_bn):
        nxt = conv_bn[i + 1][1] if i + 1 < len(conv_bn) else None
        out.append((attr, kind, nxt != BN and (i + 1 < len(conv_bn) or last_act)))
    return tuple(out)


class BasicBlock(ResidualBlock):
    """conv3x3-BN-act-conv3x3-BN, then act(F(x) + shortcut(x)); plain twin: act(F(x)).
    Without norm: conv3x3-act-conv3x3 (convs with biases)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, residual: bool, shortcut: str,
                 norm: str = "bn", act: str = "relu"):  # fmt: skip
        super().__init__(residual, relu_after_branch=not residual)
        self.act, self.act_name = ACTIVATIONS[act], act
        bias = norm == "none"
        self.conv1 = conv3x3(in_channels, out_channels, stride, bias=bias)
        self.bn1 = batch_norm(out_channels, norm)
        self.conv2 = conv3x3(out_channels, out_channels, bias=bias)
        self.bn2 = batch_norm(out_channels, norm)
        self.branch_out = nn.Identity()
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut) if residual else None
        present = [(a, k) for a, k in (("conv1", CONV), ("bn1", BN), ("conv2", CONV), ("bn2", BN)) if getattr(self, a)]
        self.main_layers = layers_of(present, last_act=False)
        self.relu_output = act == "relu"

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): conv3x3-[BN]-act-conv3x3-[BN]."""
        out = self.conv1(x)
        out = self.act(out if self.bn1 is None else self.bn1(out))
        out = self.conv2(out)
        return self.branch_out(out if self.bn2 is None else self.bn2(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.shortcut is not None:
            out = self.add_branch(out, self.shortcut(x))
        return self.act(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight if self.bn2 is not None else self.conv2.weight)


class CifarNet(ZooModel):
    """The CIFAR layout: a stem, three stages of ``n`` blocks (16/32/64 channels, stride 2
    into stages 2 and 3), global average pooling and a classifier. Subclasses say what a
    block is (:meth:`block`) and may change the stem (by default conv3x3-[BN]-act, after
    ``norm`` and ``act_name``) and head."""

    arch = "cifar"
    norm = "bn"  # subclasses may set these before building: the default stem follows them
    act_name = "relu"

    def __init__(self, n: int, residual: bool, num_classes: int, in_channels: int, drop_path: float = 0.0,
                 family: str | None = None):  # fmt: skip
        super().__init__(residual, family)
        self.build_stem(in_channels, WIDTHS[0])
        stages, width, count = [], WIDTHS[0], 0
        for i, out in enumerate(WIDTHS):
            blocks = []
            for j in range(n):
                blocks.append(self.block(width if j == 0 else out, out, 2 if (i > 0 and j == 0) else 1, i, j, n))
                count += 1
                blocks[-1].drop_prob = drop_path * count / (3 * n) if residual else 0.0  # Huang et al.: p_l = P l / L
            stages.append(nn.Sequential(*blocks))
            width = out
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(WIDTHS[-1], num_classes)

    def build_stem(self, in_channels: int, width: int) -> None:
        self.conv1 = conv3x3(in_channels, width, bias=self.norm == "none")
        self.bn1 = batch_norm(width, self.norm)
        self.act = ACTIVATIONS[self.act_name]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.act(x if self.bn1 is None else self.bn1(x))

    def stem_points(self):
        if self.bn1 is None:
            return [point("conv1", CONV, **followed_by(self.act_name))]
        return [point("conv1", CONV, bn_next=True), point("bn1", BN, **followed_by(self.act_name))]

    def block(self, in_channels: int, out_channels: int, stride: int, stage: int, index: int, n: int) -> ResidualBlock:
        raise NotImplementedError

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output, pooled over space (what the classifier sees)."""
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pooled(x))

    def head_points(self):
        return [point("fc", FC)]


class CifarResNet(CifarNet):
    """A CIFAR ResNet (``residual=True``) or plain net with ``n`` blocks per stage."""

    def __init__(
        self,
        n: int,
        residual: bool = True,
        shortcut: str = "A",
        num_classes: int = 10,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        norm: str = "bn",
        act: str = "relu",
        drop_path: float = 0.0,
    ):
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, not {shortcut!r}")
        self.shortcut_option, self.norm, self.act_name = shortcut, norm, act
        super().__init__(n, residual, num_classes, in_channels, drop_path)
        init_weights(self)
        self._finish(zero_init_residual)

    def block(self, in_channels, out_channels, stride, stage, index, n) -> ResidualBlock:
        return BasicBlock(in_channels, out_channels, stride, self.family == "resnet", self.shortcut_option,
                          self.norm, self.act_name)  # fmt: skip
