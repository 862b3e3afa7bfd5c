"""What `gradlab bench overhead` times: a model, a batch, a loss, named as a case.

A case is a zoo model name or ``transformer`` (gradlab.bench.transformer: a 12-layer pre-LN
transformer, width 32, 2 heads, sequences of 8 tokens), with ``@N`` for its batch size
(default: 128 images, or 4 sequences). The default cases are one step dominated by
arithmetic and two short ones made of many small ops, where a GPU spends its time on
kernel launches and a CPU on dispatch:

    resnet56        ResNet-56, 128 images of 3x32x32
    transformer     the transformer, 4 sequences of 8 tokens
    resnet20@8      ResNet-20, 8 images of 3x32x32

A zoo name may carry the activation its CIFAR blocks use after a colon (``plain20:sigmoid``,
``resnet20:tanh@8``): where act_sat_frac is recorded, to measure what it costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from gradlab.errors import ConfigError
from gradlab.models.options import ACTS

__all__ = ["Case", "DEFAULT_CASES", "build_case", "parse_cases"]

DEFAULT_CASES = "resnet56,transformer,resnet20@8"
TRANSFORMER = "transformer"
TOKENS = 8


@dataclass
class Case:
    name: str  # as given: "resnet20@8"
    model: str  # "resnet20", "transformer"
    batch_size: int
    net: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    input_size: list[int]  # of one example: [3, 32, 32] or [8] tokens

    @property
    def input_text(self) -> str:
        shape = "x".join(map(str, self.input_size))
        return f"{self.batch_size} sequences of {shape} tokens" if self.model == TRANSFORMER else \
            f"batch {self.batch_size}x{shape}"  # fmt: skip


def parse_cases(text: str, batch_size: int | None) -> list[tuple[str, str, int]]:
    """'resnet56,transformer,resnet20@8' -> [(name, model, batch)]; ``batch_size`` is the
    batch of a case without ``@N`` (None: 128, or 4 for the transformer)."""
    out = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            raise ConfigError(f"--model has an empty item in '{text}'; give names such as {DEFAULT_CASES}")
        model, _, batch = item.partition("@")
        if batch and not batch.isdigit() or batch == "0":
            raise ConfigError(f"--model {item}: the batch after @ must be a positive whole number, as in resnet20@8")
        act = model.partition(":")[2]
        if act and (act not in ACTS or model.startswith(TRANSFORMER)):
            raise ConfigError(f"--model {item}: after the colon comes a zoo net's activation, one of {', '.join(ACTS)}, "
                              "as in plain20:sigmoid")  # fmt: skip
        size = int(batch) if batch else batch_size if batch_size is not None else 4 if model == TRANSFORMER else 128
        out.append((item, model, size))
    return out


def build_case(name: str, model: str, batch_size: int, device: torch.device, seed: int = 0) -> Case:
    """The case's network (on ``device``, seeded) and one batch of inputs and labels."""
    if model == TRANSFORMER:
        from gradlab.bench.transformer import tiny_transformer

        net, (x, y) = tiny_transformer(batch=batch_size, tokens=TOKENS, seed=seed)
        return Case(name, model, batch_size, net.to(device), x.to(device), y.to(device), [TOKENS])
    from gradlab.bench.timing import input_size
    from gradlab.models import build

    torch.manual_seed(seed)
    arch, _, act = model.partition(":")
    net = build(arch, act=act or "relu").to(device)
    shape = input_size(arch)
    x = torch.randn(batch_size, *shape, device=device)
    with torch.no_grad():
        net.eval()
        num_classes = net(x[:2]).shape[1]
        net.train()
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    return Case(name, model, batch_size, net, x, y, list(shape))
