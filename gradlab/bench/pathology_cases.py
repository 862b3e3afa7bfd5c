"""Known answers for the findings engine (issue #28): small runs with a pathology put in on
purpose, at a known layer and step, and healthy runs, each a gradlab run directory.

    from gradlab.bench.pathology_cases import CASES, train_all
    dirs = train_all(tmp_path)                  # {case name: run directory}: about 10 s on 2 CPU cores

A case names the rule expected to fire (``rule``; ``also``: others that may rightly fire on
the same run) and, where the pathology was put in at one place, its ``layer`` and ``step``.
``layer`` is a layer of layers.parquet (a parameter such as ``fc2.weight``, a probe point
such as ``blocks.1.branch.fc1``) or a module prefix whose parameters (``<layer>.…``) all
show it. tests/test_pathology_cases.py checks from each run directory alone that the
pathology is there, where the case says, and that the healthy runs are healthy.

Own-loop cases train with gradlab.bench.pathology_nets.train_loop (every step recorded, the
loss logged each step as ``train_loss``, act_dead_frac recorded); the zoo's ResNet-20 and
NF-ResNet-20 train with gradlab's trainer (the loss logged every 5 steps, a running mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn

from gradlab.bench.pathology_nets import Loop, ResidualMLP, mlp, token_batch, train_loop
from gradlab.bench.transformer import TinyTransformer

__all__ = ["CASES", "Case", "RULES", "case", "train_all"]

RULES = ("vanishing_gradients", "exploding_gradients", "dead_units", "nonfinite_onset", "loss_spike",
         "not_learning", "zero_gradients", "update_ratio")  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One run with a known answer. ``kind``: "pathology" or "healthy" (``rule`` None);
    ``train(root)`` writes the run under ``root`` and returns its directory."""

    name: str
    kind: str
    rule: str | None
    layer: str | None
    step: int | None
    description: str
    train: Callable[[Path], Path]
    also: tuple[str, ...] = ()


def _doc(f: Callable) -> str:
    return " ".join(f.__doc__.split())


def _seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


def relu_mlp() -> nn.Sequential:
    """64 → 64 → 64 → 64 → 10, ReLUs between (fc0…fc3)."""
    return mlp([64, 64, 64, 64, 10], nn.ReLU)


# ---------------------------------------------------------------------------- pathologies


def train_sigmoid_deep(root: Path) -> Path:
    """20 Linear+Sigmoid layers at PyTorch's default init: each sigmoid passes at most a
    quarter of the gradient, so it shrinks geometrically towards the input (Glorot &
    Bengio 2010; Hochreiter 1991)."""
    _seeded()
    model = mlp([64] + [32] * 19 + [10], nn.Sigmoid)
    return train_loop(root / "sigmoid_deep", model, Loop(steps=30, lr=0.1, config={"layers": 20}))


DEAD_LAYER = "blocks.1.branch.fc1"


def train_dead_relu(root: Path) -> Path:
    """A residual ReLU MLP whose one Linear has a bias of -10: every unit of the ReLU after
    it is negative for every input, gets no gradient and never recovers (dead ReLUs, Lu et
    al. 2019 "Dying ReLU and initialization"). The residual stream carries the rest."""
    _seeded()
    model = ResidualMLP(depth=4)
    with torch.no_grad():
        model.get_submodule(DEAD_LAYER).bias.fill_(-10.0)
    return train_loop(root / "dead_relu", model, Loop(steps=40, lr=0.05, config={"dead_bias": -10.0}))


def train_lr_too_high(root: Path) -> Path:
    """A ReLU MLP with the squared error and SGD at lr 15, 30× one that learns (0.5): each
    step overshoots further, weights and gradients grow by orders of magnitude a step, the
    updates exceed the weights, and within a few steps everything is inf, then NaN (the
    divergence of gradient descent past lr 2/λmax, e.g. Cohen et al. 2021)."""
    _seeded()
    return train_loop(root / "lr_too_high", relu_mlp(), Loop(steps=20, lr=15.0, mse=True))


NAN_LAYER, NAN_STEP = "fc2.weight", 20


def _put_nan(step: int, model: nn.Module, x: torch.Tensor) -> None:
    if step == NAN_STEP:
        model.get_parameter(NAN_LAYER)[0, 0] = float("nan")


def train_nan_weight(root: Path) -> Path:
    """A ReLU MLP training normally until one weight element of fc2 is set to NaN just
    before step 20's forward, as a bad kernel or a corrupt checkpoint would: the first
    non-finite value of the run is that weight at that step."""
    _seeded()
    loop = Loop(steps=30, lr=0.1, before=_put_nan, config={"nan_layer": NAN_LAYER, "nan_step": NAN_STEP})
    return train_loop(root / "nan_weight", relu_mlp(), loop)


SPIKE_STEP = 40


def _scale_batch(step: int, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    return x * 1e3 if step == SPIKE_STEP else None


def train_loss_spike(root: Path) -> Path:
    """A healthy residual MLP given one batch scaled by 1e3 at step 40 (a unit or
    preprocessing bug in one shard): its logits and its loss jump a thousandfold. Adam
    bounds that step's update by its lr, so the run goes on afterwards."""
    _seeded()
    loop = Loop(steps=50, lr=1e-3, adam=True, before=_scale_batch, config={"spike_step": SPIKE_STEP, "scale": 1e3})
    return train_loop(root / "loss_spike", ResidualMLP(depth=4), loop)


FROZEN_LAYER = "fc1.weight"


def _frozen_groups(model: nn.Module) -> list[dict]:
    frozen = model.get_parameter(FROZEN_LAYER)
    return [{"params": [p for p in model.parameters() if p is not frozen]}, {"params": [frozen], "lr": 0.0}]


def train_frozen_layer(root: Path) -> Path:
    """A ReLU MLP whose fc1 weight sits in its own parameter group with lr 0, as a
    forgotten freeze or a bad schedule leaves it: it gets a gradient (recorded) but never
    moves. (requires_grad=False would remove it from the record altogether: the recorder
    watches only parameters that require a gradient.)"""
    _seeded()
    loop = Loop(steps=40, lr=0.1, groups=_frozen_groups, config={"frozen": FROZEN_LAYER})
    return train_loop(root / "frozen_layer", relu_mlp(), loop)


GATED_BLOCK = "blocks.1.branch"


def train_zero_gate(root: Path) -> Path:
    """A residual MLP whose block 1 is ``x + alpha * branch(x)`` with alpha = 0 (ReZero,
    Bachlechner et al. 2020): at step 0 the branch's parameters get a gradient of exactly
    zero; alpha's own gradient is not zero, so from step 1 on they learn."""
    _seeded()
    loop = Loop(steps=40, lr=0.05, config={"gated": GATED_BLOCK})
    return train_loop(root / "zero_gate", ResidualMLP(depth=4, gated=(1,)), loop)


# ---------------------------------------------------------------------------- healthy


def _zoo(model: str, case_name: str, root: Path) -> Path:
    from gradlab.config import load_preset, make_run_spec
    from gradlab.train import train

    recipe = {"eval_every": 5, "checkpoint_every": 60, "batch_size": 32}
    spec = make_run_spec(model, load_preset("quick"), steps=60, experiment=case_name, recipe=recipe)
    return train(spec, root, progress=False).run_dir


def train_resnet20(root: Path) -> Path:
    """ResNet-20 (He et al. 2016) on digits with gradlab's trainer, the quick preset's
    recipe shortened to 60 steps (run directory ``<root>/resnet20/resnet20-s0``)."""
    return _zoo("resnet20", "resnet20", root)


def train_nfresnet20(root: Path) -> Path:
    """NF-ResNet-20 (Brock et al. 2021: no BatchNorm, scaled weight standardisation) on
    digits with gradlab's trainer, 60 steps (``<root>/nfresnet20/nfresnet20-s0``)."""
    return _zoo("nfresnet20", "nfresnet20", root)


def train_transformer(root: Path) -> Path:
    """The 12-layer pre-LN transformer of gradlab.bench.transformer (Xiong et al. 2020) on
    synthetic tokens, Adam at lr 1e-3 for 40 steps."""
    _seeded()
    loop = Loop(steps=40, lr=1e-3, adam=True, data=token_batch, stats=None, config={"data": "synthetic tokens"})
    return train_loop(root / "transformer", TinyTransformer(), loop)


def train_residual_mlp(root: Path) -> Path:
    """The residual ReLU MLP of the dead-unit, spike and gate cases, untouched, on digits."""
    _seeded()
    return train_loop(root / "residual_mlp", ResidualMLP(depth=4), Loop(steps=40, lr=0.05))


CASES: tuple[Case, ...] = (
    Case("sigmoid_deep", "pathology", "vanishing_gradients", None, None, _doc(train_sigmoid_deep),
         train_sigmoid_deep),
    Case("dead_relu", "pathology", "dead_units", DEAD_LAYER, 0, _doc(train_dead_relu), train_dead_relu),
    Case("lr_too_high", "pathology", "exploding_gradients", None, None, _doc(train_lr_too_high),
         train_lr_too_high, also=("update_ratio", "nonfinite_onset", "loss_spike")),
    Case("nan_weight", "pathology", "nonfinite_onset", NAN_LAYER, NAN_STEP, _doc(train_nan_weight),
         train_nan_weight),
    Case("loss_spike", "pathology", "loss_spike", None, SPIKE_STEP, _doc(train_loss_spike), train_loss_spike,
         also=("exploding_gradients",)),
    Case("frozen_layer", "pathology", "not_learning", FROZEN_LAYER, 0, _doc(train_frozen_layer),
         train_frozen_layer, also=("update_ratio",)),
    Case("zero_gate", "pathology", "zero_gradients", GATED_BLOCK, 0, _doc(train_zero_gate), train_zero_gate),
    Case("resnet20", "healthy", None, None, None, _doc(train_resnet20), train_resnet20),
    Case("nfresnet20", "healthy", None, None, None, _doc(train_nfresnet20), train_nfresnet20),
    Case("transformer", "healthy", None, None, None, _doc(train_transformer), train_transformer),
    Case("residual_mlp", "healthy", None, None, None, _doc(train_residual_mlp), train_residual_mlp),
)  # fmt: skip


def case(name: str) -> Case:
    """The case called ``name`` (KeyError naming the valid ones)."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"no pathology case {name!r}; cases: {', '.join(c.name for c in CASES)}")


def train_all(root: str | Path, names: Iterable[str] | None = None) -> dict[str, Path]:
    """Train every case (or those named) under ``root``: {case name: run directory}."""
    root = Path(root)
    chosen = CASES if names is None else tuple(case(n) for n in names)
    return {c.name: c.train(root) for c in chosen}
