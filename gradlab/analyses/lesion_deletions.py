"""What a lesion deletes (Veit et al. 2016) and how: units of a zoo net, skipped through hooks.

The unit deleted follows the paper: blocks of residual nets, and for plain nets single
layers (``unit="layer"``, the default) or, to compare like with like, whole blocks
(``unit="block"``). In eval mode with the trained BN statistics, through forward hooks
(the models are not edited):

- residual block: its branch F(x) is replaced by zeros (a hook on the block's
  ``branch_out``), so the block computes what its own definition leaves without F: for
  the CIFAR, ImageNet and seed nets relu(shortcut(x)), which is x for an identity shortcut
  (x is already the output of a ReLU); for pre-activation nets shortcut(x). Every block
  can be deleted, also the downsampling ones (their shortcut changes the shape).
- plain layer: one weighted layer of a plain block's main path with what belongs to it up
  to the next weighted layer, read off the block's ``main_layers``. A pre-hook on the
  layer's first module keeps its input x, and a hook on its last module returns x instead
  of that module's output:

    post-activation (conv -> BN -> ReLU; CIFAR and ImageNet basic/bottleneck blocks):
        layer k = (convk, bnk); bnk's output is replaced by x. The ReLU after it (inside
        the block, or the block's final ReLU after the last layer) then gives relu(x) = x,
        because x is itself a ReLU output (or the max-pool of one, for ImageNet's first
        block), so the layer is exactly the identity.
    pre-activation (BN -> ReLU -> conv; preplain basic and bottleneck blocks):
        layer k = (bnk, convk); convk's output is replaced by x (no ReLU follows it).
    seed blocks (conv -> ReLU, no BN): layer k = (convk,); convk's output is replaced.
        Both seed convs change the channels (16 -> 30 -> 16), so no seed layer can go.

  Only layers whose input and output shapes match (stride 1, same channels) are deleted;
  the others (a stage's first, strided conv; bottleneck 1x1 reductions and expansions;
  seed convs) have no identity to stand in for them and get a NaN error. The stem conv and
  the classifier are not block layers and are never deleted.
- plain block (``unit="block"``): the whole block is replaced by the identity, y = x, the
  same way (pre-hook and hook on the block), where its input and output shapes match.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from gradlab.errors import ModelError
from gradlab.models.probe_points import CONV, FC

__all__ = ["BLOCK", "LAYER", "UNITS", "Deletion", "deleted", "deletions", "layer_groups", "unit_shapes"]

BLOCK, LAYER = "block", "layer"
UNITS = (LAYER, BLOCK)  # what a plain net loses per deletion; residual nets always lose blocks


@dataclass(frozen=True)
class Deletion:
    """One thing to delete: a whole block, or one weighted layer of a plain block.

    ``first`` receives the unit's input (pre-hook) and ``last`` has its output replaced
    (module paths; both the block itself for a block). A residual block is deleted through
    its ``branch_out`` instead.
    """

    unit: str  # "block" | "layer"
    index: int  # depth order: block position, or position among main-path weighted layers
    layer: str  # the block's name, or the path of the layer's weighted module
    block: str
    block_index: int
    first: str
    last: str
    residual: bool = False


def layer_groups(block: torch.nn.Module) -> list[tuple[str, ...]]:
    """A block's ``main_layers`` split into layers: one weighted module each, with its norm if any.

    Post-activation blocks list conv before BN (a layer is conv, BN and the ReLU after it),
    pre-activation blocks BN before conv (BN, ReLU, then the conv closes the layer).
    """
    names = [(attr, kind) for attr, kind, _ in block.main_layers]
    groups: list[list[str]] = []
    if names[0][1] == CONV:
        for attr, kind in names:
            if kind == CONV:
                groups.append([attr])
            else:
                groups[-1].append(attr)
    else:
        current: list[str] = []
        for attr, kind in names:
            current.append(attr)
            if kind == CONV:
                groups.append(current)
                current = []
        if current:
            raise ModelError(f"{type(block).__name__}.main_layers ends with {current} after its last conv; "
                             f"a lesion layer must end with its weighted module")  # fmt: skip
    return [tuple(g) for g in groups]


def deletions(model: torch.nn.Module, unit: str = LAYER) -> list[Deletion]:
    """What to delete, in depth order: blocks of residual nets; layers or blocks of plain nets."""
    blocks = model.residual_blocks()
    residual = any(block.residual for _, block in blocks)
    if residual or unit == BLOCK:
        return [Deletion(BLOCK, i, name, name, i, name, name, block.residual)
                for i, (name, block) in enumerate(blocks, start=1)]  # fmt: skip
    weighted = [p.name for p in model.probe_points() if p.role == "main" and p.kind in (CONV, FC)]
    position = {name: i for i, name in enumerate(weighted, start=1)}
    out = []
    for b, (name, block) in enumerate(blocks, start=1):
        for group in layer_groups(block):
            conv = next(a for a in group if f"{name}.{a}" in position)
            out.append(Deletion(LAYER, position[f"{name}.{conv}"], f"{name}.{conv}", name, b,
                                f"{name}.{group[0]}", f"{name}.{group[-1]}"))  # fmt: skip
    return out


def _zero_branch(module, inputs, output):
    return torch.zeros_like(output)


@contextmanager
def deleted(model: torch.nn.Module, d: Deletion) -> Iterator[None]:
    """Run the model with `d` deleted: a residual block's F(x) zeroed, else the unit skipped.

    Skipping keeps the input of ``d.first`` (pre-hook) and returns it as the output of
    ``d.last``; the hooks are removed on exit, so the model is left as it was.
    """
    modules = dict(model.named_modules())
    if d.residual:
        handles = [modules[f"{d.block}.branch_out"].register_forward_hook(_zero_branch)]
    else:
        kept: list[torch.Tensor] = []

        def keep(module, inputs):
            kept.append(inputs[0])

        def give(module, inputs, output):
            return kept.pop()

        handles = [modules[d.first].register_forward_pre_hook(keep), modules[d.last].register_forward_hook(give)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def unit_shapes(model: torch.nn.Module, x: torch.Tensor, plan: list[Deletion]) -> list[tuple[tuple, tuple]]:
    """(input shape of ``first``, output shape of ``last``) per deletion, from one forward pass on x."""
    modules = dict(model.named_modules())
    shapes = [[(), ()] for _ in plan]

    def record_in(i):
        def hook(module, inputs):
            shapes[i][0] = tuple(inputs[0].shape)
        return hook

    def record_out(i):
        def hook(module, inputs, output):
            shapes[i][1] = tuple(output.shape)
        return hook

    hooks = []
    for i, d in enumerate(plan):
        hooks.append(modules[d.first].register_forward_pre_hook(record_in(i)))
        hooks.append(modules[d.last].register_forward_hook(record_out(i)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [(tuple(a), tuple(b)) for a, b in shapes]
