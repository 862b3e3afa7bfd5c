"""What every zoo model shares: its identity (arch, family, depth) and its probe points.

A model lists its probe points once, at construction, from a layout that each residual
block describes for itself; recorders then never guess from module types.
"""

from __future__ import annotations

from collections.abc import Iterable
import torch
import torch.nn as nn

from gradlab import families
from gradlab.models.probe_points import BLOCK, BN, BRANCH, CONV, FC, ProbePoint, followed_by, numbered, point

__all__ = ["ResidualBlock", "ZooModel", "BLOCK", "BN", "BRANCH", "CONV", "FC", "point"]


class ResidualBlock(nn.Module):
    """A residual block, or its plain twin (``residual=False``: the same modules, no addition).

    Subclasses set ``main_layers`` (attribute, kind, act follows) in forward order (the last
    layer's flag is taken from ``relu_after_branch``, like F(x)'s; the activation is
    ``act_name``, a ReLU unless the block says otherwise), own an
    ``nn.Identity`` named ``branch_out`` (registered after the branch's layers) that they
    apply to F(x) right before the addition, so that a forward hook on it sees F(x), and
    keep their projection shortcut (if any) under ``shortcut_attr``.
    """

    main_layers: tuple[tuple[str, str, bool], ...] = ()
    shortcut_attr = "shortcut"
    # Whether forward returns a ReLU's output (post-activation blocks and their plain twins).
    relu_output = True
    # The main path's activation ("relu", or a saturating "sigmoid"/"tanh": gradlab.models.layers).
    act_name = "relu"

    def __init__(self, residual: bool, relu_after_branch: bool):
        super().__init__()
        self.residual = residual
        # Whether the block's activation (act_name) is applied to F(x) itself: true for
        # post-activation plain twins, false when F(x) is added to the shortcut or when the
        # block has no final activation.
        self.relu_after_branch = relu_after_branch
        self.drop_prob = 0.0  # stochastic depth (Huang et al. 2016): see add_branch
        self.drop_rng: torch.Generator | None = None  # the model's, reseeded every step (ZooModel.seed_drops)

    def extra_repr(self) -> str:
        return f"residual={self.residual}" + (f", drop_prob={self.drop_prob:g}" if self.drop_prob else "")

    def add_branch(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """``shortcut + F(x)``; with stochastic depth (Huang et al. 2016), in training F(x) is
        dropped for the whole batch with probability ``drop_prob`` (the block is the
        shortcut), and in eval it is scaled by the survival probability ``1 - drop_prob``."""
        p = self.drop_prob
        if p:
            if self.training:
                if torch.rand((), generator=self.drop_rng) < p:  # a CPU draw: no device sync
                    return shortcut
            else:
                branch = branch * (1 - p)
        return shortcut + branch

    def zero_init_last(self) -> None:
        """Make F(x) zero at init so that the block starts as (almost) the identity."""
        raise NotImplementedError

    def probe_layout(self, name: str) -> list[ProbePoint]:
        *head, (last, last_kind, _) = self.main_layers
        # in every zoo block a conv listed right before a BN feeds that BN and nothing else
        feeds_bn = [k == CONV and nxt == BN for (_, k, _), (_, nxt, _) in zip(self.main_layers, self.main_layers[1:])]
        act = self.act_name
        points = [point(f"{name}.{a}", kind, name, "main", bn_next=bn, **followed_by(act, follows))
                  for (a, kind, follows), bn in zip(head, feeds_bn)]  # fmt: skip
        points.append(point(f"{name}.{last}", last_kind, name, "main", **followed_by(act, self.relu_after_branch)))
        points.append(point(f"{name}.branch_out", BRANCH, name, "main", **followed_by(act, self.relu_after_branch)))
        shortcut = getattr(self, self.shortcut_attr, None)
        if isinstance(shortcut, nn.Module):
            mods = list(shortcut.named_modules())
            for (sub, m), (_, nxt) in zip(mods, mods[1:] + [("", None)]):
                path = f"{name}.{self.shortcut_attr}" + (f".{sub}" if sub else "")
                if isinstance(m, nn.Conv2d):  # a projection: conv, then its BN (option B/C)
                    points.append(point(path, CONV, name, "shortcut", bn_next=isinstance(nxt, nn.BatchNorm2d)))
                elif isinstance(m, nn.BatchNorm2d):
                    points.append(point(path, BN, name, "shortcut"))
        points.append(point(name, BLOCK, name, relu_output=self.relu_output))
        return points


class ZooModel(nn.Module):
    """Base class of every model built by ``gradlab.models.build``.

    Attributes: ``arch`` ("cifar" | "preact" | "imagenet" | "seed"), ``family`` (a name
    in gradlab.families: "resnet", "plain", "fixup", ...), ``depth`` (weighted layers on
    the main path), ``blocks``, ``options`` (the build options that differ from the
    defaults, e.g. ``{"norm": "none"}``: gradlab.models.build sets them).
    """

    arch: str = ""

    def __init__(self, residual: bool, family: str | None = None):
        super().__init__()
        self.family = family or (families.RESNET if residual else families.PLAIN)
        self.depth = 0
        self.blocks = 0
        self.options: dict = {}
        self._probe_points: tuple[ProbePoint, ...] = ()
        self.drop_rng: torch.Generator | None = None  # stochastic depth's draws, when a block drops

    def seed_drops(self, seed: int, step: int) -> None:
        """Make stochastic depth's draws for this step a function of (seed, step), as the
        batches are: a resumed run drops the blocks the uninterrupted one would have, and
        every data-parallel rank drops the same ones (no-op without stochastic depth)."""
        if self.drop_rng is not None:
            self.drop_rng.manual_seed((seed << 32) + step)

    def stem_points(self) -> Iterable[ProbePoint]:
        return ()

    def head_points(self) -> Iterable[ProbePoint]:
        return ()

    def residual_blocks(self) -> list[tuple[str, ResidualBlock]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, ResidualBlock)]

    def _finish(self, zero_init_residual: bool) -> None:
        """Call at the end of ``__init__``: zero-init, then fix depth, blocks, probe points."""
        blocks = self.residual_blocks()
        dropping = [block for _, block in blocks if block.drop_prob]
        if dropping:
            self.drop_rng = torch.Generator()
            for block in dropping:
                block.drop_rng = self.drop_rng
        if zero_init_residual:
            for _, block in blocks:
                if block.residual:  # a plain twin has no residual branch to zero
                    block.zero_init_last()
        layout = list(self.stem_points())
        for name, block in blocks:
            layout.extend(block.probe_layout(name))
        layout.extend(self.head_points())
        self._probe_points = numbered(layout)
        self.blocks = len(blocks)
        self.depth = sum(1 for p in layout if p.role == "main" and p.kind in (CONV, FC))

    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups: the trainable parameters, and where a paper
        trains some at another rate, their group with an ``lr_scale`` (the trainer's
        learning rate times it)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def probe_points(self) -> list[ProbePoint]:
        """Probe points in depth (forward) order; ``index`` is the position in this list."""
        return list(self._probe_points)
