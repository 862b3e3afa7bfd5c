"""The later remedies for training deep residual nets, in the CIFAR layout (6n+2 layers).

* Fixup (Zhang, Dauphin & Ma 2019, arXiv 1901.09321): no normalization. Each branch's last
  conv and the classifier start at zero, the other branch convs are He-initialized and
  scaled by L^(-1/(2m-2)) (L residual blocks, m = 2 layers per branch: L^(-1/2)); scalar
  biases before each conv and activation, and a scalar multiplier per branch.
* ReZero (Bachlechner et al. 2020, arXiv 2003.04887): x + alpha * F(x), alpha a learnable
  scalar starting at 0, BatchNorm kept in F as in the paper's CIFAR ResNets.
* SkipInit (De & Smith 2020, arXiv 2002.10444): the same gate without any normalization.
* NF-ResNet (Brock, De & Smith 2021, arXiv 2101.08692): h + alpha * f(h / beta), with scaled
  weight standardization, a variance-preserving ReLU, beta the analytically expected std of
  h and alpha = 0.2; at each transition block the shortcut takes h / beta too, so the
  expected variance restarts at 1 + alpha^2.

ReZero, SkipInit and NF blocks have no ReLU after the addition, so that at initialization
(alpha = 0) a block is exactly the identity, or its shortcut where the shape changes; a
Fixup block keeps the ResNet's final ReLU and is relu(x), the identity on the ReLU outputs
it receives. Shortcuts are option A (subsample and zero-pad) except in NF-ResNets (a 1x1
standardized conv).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab.models.base import CONV, point, ResidualBlock
from gradlab.models.cifar import BasicBlock, CifarNet, make_shortcut
from gradlab.models.layers import RELU_GAMMA, WSConv2d, conv3x3, init_weights

__all__ = ["FixupResNet", "GatedResNet", "NFResNet", "NF_ALPHA", "fixup_scale", "nf_expected_variances"]

NF_ALPHA = 0.2


def _scalar(value: float) -> nn.Parameter:
    return nn.Parameter(torch.full((1,), float(value)))


# ---------------------------------------------------------------------------- Fixup


def fixup_scale(blocks: int, layers_per_branch: int = 2) -> float:
    """Fixup's rescaling of the He-initialized branch convs: L^(-1/(2m-2))."""
    return blocks ** (-1 / (2 * layers_per_branch - 2))


class FixupBlock(ResidualBlock):
    """relu(shortcut(x) + scale * conv2(relu(conv1(x + b1a) + b1b) + b2a) + b2b)."""

    main_layers = (("conv1", CONV, False), ("conv2", CONV, False))

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(residual=True, relu_after_branch=False)
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = (_scalar(0) for _ in range(4))
        self.scale = _scalar(1)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.branch_out = nn.Identity()
        self.shortcut = make_shortcut(in_channels, out_channels, stride, "A")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.branch_out(self.conv2(out + self.bias2a) * self.scale + self.bias2b)
        # (the authors' downsampling shortcut sees x + bias1a, as conv1 does)
        shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(x + self.bias1a)
        return F.relu(self.add_branch(out, shortcut))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class FixupResNet(CifarNet):
    """Fixup's CIFAR ResNet: relu(conv(x) + b) stem, Fixup blocks, fc(pool + b) head."""

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3, drop_path: float = 0.0):
        super().__init__(n, True, num_classes, in_channels, drop_path, family="fixup")
        init_weights(self)
        if not self.fc.weight.is_meta:  # (shape-only builds for counting hold no values)
            scale = fixup_scale(3 * n)
            with torch.no_grad():
                for _, block in self.residual_blocks():
                    block.conv1.weight.mul_(scale)
                    block.zero_init_last()
                nn.init.zeros_(self.fc.weight)
                nn.init.zeros_(self.fc.bias)
        self._finish(False)

    def param_groups(self) -> list[dict]:
        """The scalar biases and multipliers at a tenth of the learning rate, as the authors'
        CIFAR training does."""
        scalars = {id(p) for n, p in self.named_parameters() if p.numel() == 1 and ("bias" in n or "scale" in n)}
        trainable = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in trainable if id(p) not in scalars]},
                {"params": [p for p in trainable if id(p) in scalars], "lr_scale": 0.1}]  # fmt: skip

    def build_stem(self, in_channels: int, width: int) -> None:
        self.conv1 = conv3x3(in_channels, width)
        self.bias1 = _scalar(0)
        self.bias2 = _scalar(0)

    def block(self, in_channels, out_channels, stride, stage, index, n) -> ResidualBlock:
        return FixupBlock(in_channels, out_channels, stride)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(x) + self.bias1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) + self.bias2

    def stem_points(self):
        return [point("conv1", CONV)]


# ---------------------------------------------------------------------------- ReZero, SkipInit


class GatedBlock(BasicBlock):
    """shortcut(x) + alpha * F(x): the ResNet's block (F = conv3x3-[BN]-ReLU-conv3x3-[BN],
    shortcut A) with a gate alpha starting at 0 and no ReLU after the addition (ReZero with
    BN, SkipInit without; convs then have biases)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str):
        super().__init__(in_channels, out_channels, stride, residual=True, shortcut="A", norm=norm)
        self.alpha = _scalar(0)
        self.relu_output = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_branch(self.alpha * self.branch(x), self.shortcut(x))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.alpha)


class GatedResNet(CifarNet):
    """ReZero (``norm="bn"``) or SkipInit (``norm="none"``) in the CIFAR layout."""

    def __init__(self, n: int, family: str, norm: str, num_classes: int = 10, in_channels: int = 3,
                 drop_path: float = 0.0):  # fmt: skip
        self.norm = norm
        super().__init__(n, True, num_classes, in_channels, drop_path, family=family)
        init_weights(self)
        self._finish(False)

    def block(self, in_channels, out_channels, stride, stage, index, n) -> ResidualBlock:
        return GatedBlock(in_channels, out_channels, stride, self.norm)


# ---------------------------------------------------------------------------- NF-ResNet


def nf_expected_variances(n: int, alpha: float = NF_ALPHA) -> list[float]:
    """The expected variance of each block's output h at init, by block in depth order: it
    grows by alpha^2 per block and restarts at 1 + alpha^2 at every transition (the stem's
    output has unit variance)."""
    return [1 + (j + 1) * alpha**2 for _ in range(3) for j in range(n)]


class NFBlock(ResidualBlock):
    """h + alpha * f(h / beta), f = conv2(relu*(conv1(relu*(h / beta)))), relu* the
    variance-preserving ReLU; a transition block's shortcut is a 1x1 standardized conv of
    relu*(h / beta), so its output's expected variance is 1 + alpha^2."""

    main_layers = (("conv1", CONV, True), ("conv2", CONV, False))
    relu_output = False

    def __init__(self, in_channels: int, out_channels: int, stride: int, beta: float, alpha: float):
        super().__init__(residual=True, relu_after_branch=False)
        self.beta, self.alpha = beta, alpha
        self.conv1 = WSConv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.conv2 = WSConv2d(out_channels, out_channels, 3, padding=1)
        self.branch_out = nn.Identity()
        transition = stride != 1 or in_channels != out_channels
        self.shortcut = WSConv2d(in_channels, out_channels, 1, stride=stride) if transition else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = F.relu(h / self.beta) * RELU_GAMMA
        out = self.branch_out(self.conv2(F.relu(self.conv1(x)) * RELU_GAMMA))
        return self.add_branch(self.alpha * out, h if self.shortcut is None else self.shortcut(x))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", beta={self.beta:.4f}, alpha={self.alpha:g}"

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.gain)


class NFResNet(CifarNet):
    """A normalizer-free ResNet in the CIFAR layout: a standardized stem conv, NF blocks
    whose beta follows the expected variance, relu* before pooling."""

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3, alpha: float = NF_ALPHA,
                 drop_path: float = 0.0):  # fmt: skip
        self.nf_alpha = alpha
        super().__init__(n, True, num_classes, in_channels, drop_path, family="nfresnet")
        init_weights(self)
        self._finish(False)

    def build_stem(self, in_channels: int, width: int) -> None:
        self.conv1 = WSConv2d(in_channels, width, 3, padding=1)
        self.expected_var = 1.0  # of the stem's output; each block then updates it

    def block(self, in_channels, out_channels, stride, stage, index, n) -> ResidualBlock:
        transition = stride != 1 or in_channels != out_channels
        block = NFBlock(in_channels, out_channels, stride, math.sqrt(self.expected_var), self.nf_alpha)
        self.expected_var = (1.0 if transition else self.expected_var) + self.nf_alpha**2
        return block

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return (F.relu(x) * RELU_GAMMA).mean((2, 3))

    def stem_points(self):
        return [point("conv1", CONV)]
