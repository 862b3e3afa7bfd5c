"""Probe points: coverage, depth order, and relu_after, checked against a real forward pass."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from gradlab.models import build, info
from gradlab.models.base import ResidualBlock


# every block type and shortcut flavour, small enough to run forward on CPU
CASES = [
    ("resnet20", {}, (3, 32, 32)),
    ("resnet20", {"shortcut": "B"}, (3, 16, 16)),
    ("resnet20", {"shortcut": "C"}, (3, 16, 16)),
    ("plain20", {}, (3, 16, 16)),
    ("preresnet110", {}, (3, 8, 8)),
    ("preplain110", {}, (3, 8, 8)),
    ("preresnet164", {}, (3, 8, 8)),
    ("preplain164", {}, (3, 8, 8)),
    ("resnet18", {}, (3, 64, 64)),
    ("plain18", {}, (3, 64, 64)),
    ("resnet50", {}, (3, 64, 64)),
    ("plain50", {}, (3, 64, 64)),
    ("seedresnet2", {}, (1, 28, 28)),
    ("seedplain2", {}, (1, 28, 28)),
]
IDS = [f"{n}-{kw.get('shortcut', '')}" for n, kw, _ in CASES]
KIND_TYPES = {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "fc": nn.Linear, "branch": nn.Identity,
              "block": ResidualBlock}


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case(request):
    name, kwargs, size = request.param
    return name, build(name, **kwargs), size


def test_points_resolve_and_are_numbered(case):
    name, model, _ = case
    points = model.probe_points()
    assert [p.index for p in points] == list(range(len(points)))
    assert len({p.name for p in points}) == len(points)
    for p in points:
        assert isinstance(model.get_submodule(p.name), KIND_TYPES[p.kind]), p
        assert p.role in ("main", "shortcut")
        if p.block is not None:
            assert p.name == p.block or p.name.startswith(p.block + ".")
            assert isinstance(model.get_submodule(p.block), ResidualBlock)


def test_depth_and_blocks(case):
    name, model, _ = case
    points = model.probe_points()
    weighted = [p for p in points if p.role == "main" and p.kind in ("conv", "fc")]
    assert len(weighted) == model.depth == info(name).depth
    blocks = [p.name for p in points if p.kind == "block"]
    assert len(blocks) == model.blocks == info(name).blocks
    assert [p.block for p in points if p.kind == "branch"] == blocks
    assert sum(p.kind == "fc" for p in points) == 1 and points[-1].kind == "fc"
    # every weighted module is covered by a probe point
    covered = {p.name for p in points}
    for n, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            assert n in covered, n


def test_every_block_has_branch_out_and_ends_with_its_block_point(case):
    name, model, _ = case
    points = model.probe_points()
    residual_blocks = [n for n, m in model.named_modules() if isinstance(m, ResidualBlock)]
    assert residual_blocks == [p.name for p in points if p.kind == "block"]
    for n in residual_blocks:
        block = model.get_submodule(n)
        assert isinstance(block.branch_out, nn.Identity)
        mine = [p for p in points if p.block == n]
        assert mine[-1].kind == "block" and mine[-1].name == n
        branch = [p.kind for p in mine].index("branch")
        main = [i for i, p in enumerate(mine) if p.role == "main" and p.kind != "block"]
        assert branch == main[-1]  # F(x) comes right after the branch's last layer
        assert all(p.role == "shortcut" for p in mine[branch + 1:-1])
        assert block.residual == (info(name).family == "resnet")


def test_shortcut_points_only_for_projections(case):
    name, model, _ = case
    shortcut = [p for p in model.probe_points() if p.role == "shortcut"]
    assert all(p.kind in ("conv", "bn") for p in shortcut)
    projections = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and
                   any(s in n for s in ("shortcut", "downsample"))]
    assert [p.name for p in shortcut if p.kind == "conv"] == projections


class _OpLog(TorchFunctionMode):
    """Every torch function call in order, with the tensors it takes."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves, _ = tree_flatten((args, kwargs))
        self.calls.append((func, [t for t in leaves if isinstance(t, torch.Tensor)]))
        return func(*args, **kwargs)


def test_forward_order_and_relu_after(case):
    name, model, size = case
    points = model.probe_points()
    seen = []  # (point, output tensor, position in the op log)
    log = _OpLog()

    def hook(point):
        def fn(_module, _inputs, out):
            seen.append((point, out, len(log.calls)))
        return fn

    handles = [model.get_submodule(p.name).register_forward_hook(hook(p)) for p in points]
    try:
        with log:
            model(torch.randn(2, *size))
    finally:
        for h in handles:
            h.remove()
    assert [p for p, _, _ in seen] == points  # every point runs once, in the listed order
    relu = {F.relu, torch.relu, torch.Tensor.relu}
    for p, out, at in seen:
        consumer = next((f for f, tensors in log.calls[at:] if any(t is out for t in tensors)), None)
        assert (consumer in relu) == p.relu_after, (p, consumer)
    # nothing modifies an activation in place (BN's num_batches_tracked += 1 is a buffer)
    buffers = {id(b) for b in model.buffers()}
    inplace = [f for f, tensors in log.calls if getattr(f, "__name__", "").endswith("_")
               and not f.__name__.startswith("_") and id(tensors[0]) not in buffers]
    assert inplace == [], inplace


def test_no_inplace_relu_modules(case):
    _, model, _ = case
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_probe_points_are_a_fresh_list(case):
    _, model, _ = case
    points = model.probe_points()
    points.clear()
    assert model.probe_points()
