"""Model size and cost: trainable parameters and multiply-accumulates (MACs).

MACs count the multiplies of conv and linear layers for one input (bias adds, BN, ReLU,
pooling and shortcuts are free): the "FLOPs (multiply-adds)" of He et al. 2015, Table 1.

Two ways to count, which the tests keep equal for every named model:
- ``complexity(name)`` works from the architecture arguments alone, without torch, so that
  ``gradlab models`` lists resnet1202 and resnet152 instantly;
- ``count_params(model)`` / ``count_macs(model, input_size)`` measure any built module with
  forward hooks (also on the meta device).
"""

from __future__ import annotations

from gradlab.models.registry import ModelInfo, arch_args, info


class _Tally:
    """Walks a network layer by layer, tracking the (C, H, W) shape and the running totals."""

    def __init__(self, shape: tuple[int, int, int]):
        self.shape = shape
        self.params = 0
        self.macs = 0
        self.outputs = 0  # elements of every conv output for one input (what training keeps)

    def conv(self, out: int, k: int, stride: int = 1, bias: bool = False, at=None, gain: bool = False):
        """A k x k conv with padding k // 2; ``at`` = the input shape of a side path; ``gain``:
        a standardized conv's gain per output channel."""
        c, h, w = at or self.shape
        h, w = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
        self.params += c * out * k * k + (out if bias else 0) + (out if gain else 0)
        self.macs += h * w * c * out * k * k
        self.outputs += out * h * w
        if at is None:
            self.shape = (out, h, w)

    def bn(self, channels: int | None = None) -> None:
        self.params += 2 * (channels or self.shape[0])

    def max_pool(self, k: int, stride: int, padding: int) -> None:
        c, h, w = self.shape
        self.shape = (c, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)

    def head(self, num_classes: int) -> None:
        """Global average pooling and the linear classifier."""
        c = self.shape[0]
        self.params += c * num_classes + num_classes
        self.macs += c * num_classes
        self.shape = (num_classes, 1, 1)


def _stride(stage: int, block: int) -> int:
    return 2 if stage > 0 and block == 0 else 1


def _cifar(t: _Tally, family: str, shortcut: str, n: int, norm: str = "bn") -> None:
    """The CIFAR layout of every family (gradlab.models.cifar, gradlab.models.remedies)."""
    residual = family == "resnet"
    bn = norm == "bn" and family not in ("fixup", "skipinit", "nfresnet")
    bias = not bn and family != "fixup"  # convs without a BatchNorm get biases, Fixup's scalar ones
    ws = family == "nfresnet"  # scaled weight standardization: a gain per output channel
    t.conv(16, 3, bias=bias, gain=ws)
    if bn:
        t.bn()
    t.params += 2 if family == "fixup" else 0  # the stem's and the head's scalar biases
    for i, width in enumerate((16, 32, 64)):
        for j in range(n):
            x, stride = t.shape, _stride(i, j)
            t.conv(width, 3, stride, bias=bias, gain=ws)
            if bn:
                t.bn()
            t.conv(width, 3, bias=bias, gain=ws)
            if bn:
                t.bn()
            changes = stride != 1 or x[0] != width
            if residual and (shortcut == "C" or (shortcut == "B" and changes)):
                t.conv(width, 1, stride, at=x)
                t.bn(width)
            if ws and changes:
                t.conv(width, 1, stride, at=x, bias=True, gain=True)
            t.params += {"fixup": 5, "rezero": 1, "skipinit": 1}.get(family, 0)  # scalar biases, scale, alpha


def _preact(t: _Tally, residual: bool, n: int, bottleneck: bool) -> None:
    t.conv(16, 3)
    for i, planes in enumerate((16, 32, 64)):
        for j in range(n):
            x, stride = t.shape, _stride(i, j)
            t.bn()
            if bottleneck:
                t.conv(planes, 1)
                t.bn()
                t.conv(planes, 3, stride)
                t.bn()
                t.conv(4 * planes, 1)
            else:
                t.conv(planes, 3, stride)
                t.bn()
                t.conv(planes, 3)
            if residual and (stride != 1 or x[0] != t.shape[0]):
                t.conv(t.shape[0], 1, stride, at=x)
    t.bn()


def _imagenet(t: _Tally, residual: bool, layers: tuple[int, ...], bottleneck: bool) -> None:
    t.conv(64, 7, 2)
    t.bn()
    t.max_pool(3, 2, 1)
    for i, (planes, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        for j in range(count):
            x, stride = t.shape, _stride(i, j)
            if bottleneck:
                t.conv(planes, 1)
                t.bn()
                t.conv(planes, 3, stride)
                t.bn()
                t.conv(4 * planes, 1)
                t.bn()
            else:
                t.conv(planes, 3, stride)
                t.bn()
                t.conv(planes, 3)
                t.bn()
            if residual and (stride != 1 or x[0] != t.shape[0]):
                t.conv(t.shape[0], 1, stride, at=x)
                t.bn()


def _seed(t: _Tally, residual: bool, k: int) -> None:
    t.conv(16, 3, bias=True)
    for _ in range(k):
        t.conv(30, 5, bias=True)
        t.conv(16, 3, bias=True)


def complexity(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    shortcut: str | None = None,
    input_size: tuple[int, int, int] | None = None,
    norm: str = "bn",
) -> tuple[int, int]:
    """(trainable parameters, MACs for one input) of a named model, computed from its
    architecture. Defaults: the family's input size and class count (1000 for ImageNet
    nets, 10 otherwise), shortcut option A for CIFAR nets."""
    t = _tally(name, num_classes, in_channels, shortcut, input_size, norm)
    return t.params, t.macs


def conv_outputs(name: str, input_size: tuple[int, int, int], shortcut: str | None = None, norm: str = "bn") -> int:
    """Elements of all conv outputs of a named model for one input of ``input_size`` (C, H,
    W): the scale of the activations training keeps for the backward pass."""
    return _tally(name, None, None, shortcut, input_size, norm).outputs


def _tally(name, num_classes, in_channels, shortcut, input_size, norm) -> _Tally:
    meta: ModelInfo = info(name)
    c, h, w = input_size or meta.input_size
    t = _Tally((in_channels or c, h, w))
    residual = meta.family == "resnet"
    args = arch_args(name)
    if meta.arch == "cifar":
        _cifar(t, meta.family, (shortcut or "A").upper(), norm=norm, **args)
    elif meta.arch == "preact":
        _preact(t, residual, **args)
    elif meta.arch == "imagenet":
        _imagenet(t, residual, **args)
    else:
        _seed(t, residual, **args)
    t.head(num_classes or meta.num_classes)
    return t


def count_params(model) -> int:
    """Trainable parameters of a built module."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model, input_size: tuple[int, ...]) -> int:
    """Conv and linear multiply-accumulates of one forward pass of a built module on one
    (C, H, W) input, measured with forward hooks (works on the meta device too)."""
    import torch
    import torch.nn as nn

    total = 0

    def conv_hook(m, _inputs, out):
        nonlocal total
        total += out[0].numel() * m.weight[0].numel()  # (in / groups) * kh * kw per output

    def linear_hook(m, _inputs, out):
        nonlocal total
        total += out[0].numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
