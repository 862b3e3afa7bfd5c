"""Small nets, data and the plain training loop behind the pathology suite
(gradlab.bench.pathology_cases): everything a case trains, on a CPU, in seconds.

    model = mlp([64] + [32] * 19 + [10], nn.Sigmoid)      # fc0, act0, ..., fc19
    run_dir = train_loop(root / "case", model, Loop(steps=40, lr=0.1))

Layers are named so that the cases can point at one: an MLP's Linears are ``fc0``…``fcN``
(``fcN`` the head); a residual MLP has ``embed``, ``blocks.K.branch.fc1``/``fc2`` (a ReLU
between them) and ``head``. Every run is seeded, every batch chosen by its step alone.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab.bench.transformer import VOCAB
from gradlab.stat_names import ACT_DEAD_FRAC, DEFAULT_STATS

__all__ = ["Loop", "ResidualMLP", "STATS", "digits", "mlp", "token_batch", "train_loop"]

STATS = DEFAULT_STATS + (ACT_DEAD_FRAC,)  # what every own-loop case records


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # 1,797 8x8 digits bundled with scikit-learn: offline
    return torch.tensor(bunch.data, dtype=torch.float32) / 16, torch.tensor(bunch.target)


def digits(step: int, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s batch of flattened digits (64 pixels in [0, 1]) and labels."""
    x, y = _digits()
    i = torch.randint(0, len(y), (batch,), generator=torch.Generator().manual_seed(step))
    return x[i], y[i]


def token_batch(step: int, batch: int = 32, tokens: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic token ids and a label a mean-pooled transformer can learn (it has no
    positions): how many of the ``tokens`` ids lie in the lower half of the vocabulary."""
    x = torch.randint(0, VOCAB, (batch, tokens), generator=torch.Generator().manual_seed(10_000 + step))
    return x, (x < VOCAB // 2).sum(1)


def mlp(widths: list[int], act: type[nn.Module]) -> nn.Sequential:
    """Linear ``fcK`` then ``act`` ``actK`` for each pair of widths; the last Linear (the
    head) has no activation. An ``nn.ReLU`` after a Linear gives it act_zero_frac and
    act_dead_frac (gradlab.recorder.targets)."""
    layers: list[tuple[str, nn.Module]] = []
    for k, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append((f"fc{k}", nn.Linear(w_in, w_out)))
        if k < len(widths) - 2:
            layers.append((f"act{k}", act()))
    return nn.Sequential(OrderedDict(layers))


class Block(nn.Module):
    """``x + branch(x)``, or ``x + alpha * branch(x)`` with a learnt scalar gate ``alpha``
    (ReZero, Bachlechner et al. 2020), zero at initialisation when ``gate`` is given."""

    def __init__(self, width: int, gate: float | None = None):
        super().__init__()
        self.branch = nn.Sequential(OrderedDict(
            fc1=nn.Linear(width, width), relu=nn.ReLU(), fc2=nn.Linear(width, width)))  # fmt: skip
        self.alpha = None if gate is None else nn.Parameter(torch.tensor(float(gate)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return x + (out if self.alpha is None else self.alpha * out)


class ResidualMLP(nn.Module):
    """``embed``, ``depth`` residual ReLU blocks (``gated``: the indices of those with a
    zero-initialised gate) and a linear ``head``; the branches' last Linears start at half
    PyTorch's default scale so that the residual stream grows slowly without a norm."""

    def __init__(self, depth: int = 4, width: int = 64, inputs: int = 64, classes: int = 10, gated: tuple = ()):
        super().__init__()
        self.embed = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(Block(width, 0.0 if k in gated else None) for k in range(depth))
        self.head = nn.Linear(width, classes)
        with torch.no_grad():
            for block in self.blocks:
                block.branch.fc2.weight.mul_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.embed(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


@dataclass
class Loop:
    """How a case trains: SGD with momentum (or Adam), cross-entropy (or the squared error
    to one-hot targets), a batch per step from ``data``; ``before`` may change the model or
    return another input just before a step's forward (a NaN put in, a batch scaled);
    ``groups``: parameter groups of the optimizer (default: one); ``stats``: those recorded
    (None: the defaults, for a model without an ``nn.ReLU`` module)."""

    steps: int = 40
    lr: float = 0.05
    momentum: float = 0.9
    adam: bool = False
    mse: bool = False
    data: Callable[[int], tuple[torch.Tensor, torch.Tensor]] = digits
    before: Callable[[int, nn.Module, torch.Tensor], torch.Tensor | None] | None = None
    groups: Callable[[nn.Module], list[dict]] | None = None
    stats: tuple[str, ...] | None = STATS
    config: dict = field(default_factory=dict)


def train_loop(run_dir: Path, model: nn.Module, loop: Loop, name: str | None = None) -> Path:
    """Train ``model`` as ``loop`` says, recording every step (``loop.stats``: by default
    the default statistics and act_dead_frac) into ``run_dir`` (replaced if it holds a run), the loss
    logged each step as ``train_loss``; returns ``run_dir``."""
    params = loop.groups(model) if loop.groups else model.parameters()
    opt = (torch.optim.Adam(params, lr=loop.lr) if loop.adam
           else torch.optim.SGD(params, lr=loop.lr, momentum=loop.momentum))  # fmt: skip
    config = {"steps": loop.steps, "lr": loop.lr, "optimizer": "adam" if loop.adam else "sgd",
              "loss": "mse" if loop.mse else "cross_entropy", **loop.config}  # fmt: skip
    with gradlab.watch(model, run_dir=run_dir, name=name, every=1, dense_until=loop.steps, stats=loop.stats,
                       overwrite=True, config=config) as rec:  # fmt: skip
        for step in range(loop.steps):
            x, y = loop.data(step)
            if loop.before is not None:
                with torch.no_grad():
                    changed = loop.before(step, model, x)
                x = x if changed is None else changed
            out = model(x)
            loss = F.mse_loss(out, F.one_hot(y, out.shape[-1]).float()) if loop.mse else F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            rec.step(step)
            opt.step()
            rec.log(step, train_loss=loss.detach())
    return Path(run_dir)
