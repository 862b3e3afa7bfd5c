"""The lean hooks of the points the fused CPU kernels measure (gradlab.recorder.fused_taps):
from the second recorded step on they record what the general hooks record, and any call
their plan does not describe (another batch, eval mode, a shared tensor routed otherwise)
goes to the general hook."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
import torch.nn.functional as F

import gradlab
from gradlab.models import build
from tests.recorder_frames import assert_same

pytestmark = [pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)"),
              pytest.mark.usefixtures("fresh_native")]  # (tests/conftest.py)


def _batches(n=5, batch=2, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 10, (batch,), generator=g)) for _ in range(n)]


def _record(model, batches, lean: bool, micro: int = 1, between=None, **watch):
    """(frame, plans) of SGD steps over ``batches``, each in ``micro`` forward/backward passes;
    ``between(model, step)`` runs before each step's forward; ``lean``: whether the lean
    hooks may be learned."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with gradlab.watch(model, every=1, dense_until=0, **watch) as rec:
        fused = rec._inst.hooks.fused
        if not lean:
            fused.learning = False
        kinds = []
        for step, (x, y) in enumerate(batches):
            if between is not None:
                between(model, step)
            opt.zero_grad(set_to_none=True)
            for xs, ys in zip(x.chunk(micro), y.chunk(micro)):
                F.cross_entropy(model(xs), ys).backward()
            rec.step()
            opt.step()
            kinds.append(sorted(kind for kind, _ in fused.plans.values()))
        names = [p.name for p in rec.probe_points]
        plans = {names[pos]: kind for pos, (kind, _) in fused.plans.items()}
        blocks = sorted(fused.block_sources)
        buffer = rec._inst.buffer
        written = buffer.written[: buffer.count].copy()  # every raw column, derived or not (before a flush)
        frame = rec.frame()
        frame.attrs["written"] = written
        return frame, plans, blocks, kinds


def _resnet():
    torch.manual_seed(0)
    return build("resnet8")


def test_a_resnet_takes_the_lean_hooks_and_records_what_the_general_hooks_record():
    model, batches = _resnet(), _batches()
    general, none, _, _ = _record(model, batches, lean=False)
    lean, plans, blocks, kinds = _record(model, batches, lean=True)
    assert none == {}
    assert plans["bn1"] == plans["layer1.0.bn1"] == plans["layer1.0.bn2"] == "bn"  # the BatchNorm pairs
    assert plans["layer1.0"] == "large"  # a block's output: the kernel's sum, norm and count
    assert plans["layer1.0.branch_out"] == "alias"  # the very tensor bn2 gave
    assert blocks == [1]  # a block's input that is the previous (large) block's output; not the stem's relu
    assert plans["layer2.0.bn2"] == "bn" and "layer2.0.bn1" not in plans  # its count: small, kept for step()
    assert "fc" not in plans and "layer2.0" not in plans and "conv1" not in plans  # small; measured by its BatchNorm
    assert kinds[0] == kinds[-1] and len(kinds[0]) == len(plans)  # learned on the first recorded step, kept
    assert_same(general, lean)


def test_the_lean_hooks_hand_other_batches_eval_forwards_and_micro_batches_to_the_general_hook():
    model = _resnet()
    batches = _batches(n=3, batch=4) + _batches(n=2, batch=2, seed=2) + _batches(n=2, batch=4, seed=3)

    def eval_forward(m, step):  # a forward in eval mode and one without grad between steps: not recorded
        if step == 3:
            m.eval()
            m(batches[0][0])
            m.train()
            with torch.no_grad():
                m(batches[0][0])

    for micro in (1, 2):
        general, *_ = _record(model, batches, lean=False, micro=micro, between=eval_forward)
        lean, plans, blocks, _ = _record(model, batches, lean=True, micro=micro, between=eval_forward)
        assert plans["layer1.0.bn1"] == "bn" and plans["layer1.0"] == "large" and 1 in blocks  # (learned from micro-batches too)
        assert_same(general, lean)


def test_a_sample_of_the_batch_is_what_the_lean_hooks_reduce_too():
    model, batches = _resnet(), _batches(batch=6)
    general, *_ = _record(model, batches, lean=False, act_sample=4)
    lean, plans, *_ = _record(model, batches, lean=True, act_sample=4)
    assert plans["layer1.0.bn1"] == "bn"
    assert_same(general, lean)


def _reroute(in_place: bool):
    """From step 3 on, layer1.0's branch_out gets bn2's output doubled: a copy, or the tensor
    itself doubled in place. The alias learned on the first step must not take bn2's values
    for it then."""

    def reroute(model, step):
        if step == 3:
            block = model.layer1[0]

            def branch(x):
                y = block.bn2(block.conv2(block.act(block.bn1(block.conv1(x)))))
                return block.branch_out(y.mul_(2.0) if in_place else y * 2.0)

            block.branch = branch

    return reroute


@pytest.mark.parametrize("in_place", [False, True])
def test_a_shared_tensor_routed_otherwise_later_goes_to_the_general_hook(in_place):
    model, batches = _resnet(), _batches(n=6)
    general, *_ = _record(model, batches, lean=False, between=_reroute(in_place))
    lean, plans, *_ = _record(model, batches, lean=True, between=_reroute(in_place))
    assert plans["layer1.0.branch_out"] == "alias"
    assert_same(general, lean)
    mean = lean[(lean["stat"] == "act_mean") & (lean["step"] >= 3)].set_index(["step", "layer"])["value"]
    branch, bn2 = mean.xs("layer1.0.branch_out", level="layer"), mean.xs("layer1.0.bn2", level="layer")
    assert len(branch) == 3 and ((branch - 2 * bn2).abs() <= 1e-5 + 1e-4 * bn2.abs()).all()


@pytest.mark.parametrize("watch", [{"reduce_at": "step"}, {"cpu_threads": 1}])
def test_no_lean_hooks_where_the_kernels_do_not_reduce_in_the_hooks(watch):
    _, plans, blocks, _ = _record(_resnet(), _batches(n=2), lean=True, **watch)
    assert plans == {} and blocks == []


def test_no_lean_hooks_without_the_kernels(monkeypatch):
    from gradlab.recorder import native

    monkeypatch.setenv("GRADLAB_NATIVE", "0")
    native.reset()
    _, plans, blocks, _ = _record(_resnet(), _batches(n=2), lean=True)
    assert plans == {} and blocks == []


def _eval_later(part: str):
    """From step 2 on, part of the model is in eval mode: the stem conv a BatchNorm measures,
    or the second stage (the block whose input a lean hook would take)."""

    def later(model, step):
        if step == 2:
            (model.conv1 if part == "stem conv" else model.layer2).eval()

    return later


@pytest.mark.parametrize("part", ["stem conv", "second stage"])
def test_a_module_in_eval_mode_later_is_not_measured_by_the_lean_hooks(part):
    model, batches = _resnet(), _batches(n=4)
    general, *_ = _record(model, batches, lean=False, between=_eval_later(part))
    lean, plans, blocks, _ = _record(model, batches, lean=True, between=_eval_later(part))
    assert plans["bn1"] == "bn" and blocks == [1]
    assert_same(general, lean)
    written = general.attrs["written"]
    assert len(written) == len(batches) and (written == lean.attrs["written"]).all()  # (block 1's input norm derives nothing alone)


def _bn1_into_branch_out(model, step):
    """From step 2 on, layer1.0's branch_out gets bn1's output (a tensor its lean hook took,
    which no plan foresaw it would see)."""
    if step == 2:
        block = model.layer1[0]

        def branch(x):
            y = block.bn1(block.conv1(x))
            block.bn2(block.conv2(block.act(y)))
            return block.branch_out(y)

        block.branch = branch


def test_a_point_that_meets_a_tensor_a_lean_hook_took_shares_its_values_as_the_general_hook_does():
    model, batches = _resnet(), _batches(n=4, batch=6)
    general, *_ = _record(model, batches, lean=False, act_sample=4, between=_bn1_into_branch_out)
    lean, plans, *_ = _record(model, batches, lean=True, act_sample=4, between=_bn1_into_branch_out)
    assert plans["layer1.0.bn1"] == "bn"
    assert_same(general, lean)


def test_no_output_is_held_past_its_step():
    import gc
    import weakref

    model = _resnet()
    outputs = []
    model.layer1[0].bn1.register_forward_hook(lambda m, a, out: outputs.append(weakref.ref(out)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gradlab.watch(model, every=1, dense_until=0) as rec:
        for x, y in _batches(n=3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            rec.step()
            opt.step()
        fused = rec._inst.hooks.fused
        position = next(p.index for p in rec.probe_points if p.name == "layer1.0.bn1")
        assert fused.plans[position][0] == "bn"
        gc.collect()
        assert outputs and all(ref() is None for ref in outputs)  # no bn1 output outlives its step
        assert fused._taken == {} and all(src.out is None for src in fused._sources)
        assert rec._inst.hooks.bn_grads.queued == []
