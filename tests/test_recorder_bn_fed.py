"""A point whose output goes only to a BatchNorm (ProbePoint.bn_next) is measured by that
BatchNorm: mean and std over the whole batch from its batch statistics, dL/dh from its
backward node. Known answers from the tensors themselves, in both reduction modes."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab import models
from gradlab.recorder.targets import resolve
from tests.kept_outputs import capture


@pytest.mark.parametrize("reduce_at", ["hooks", "step"])
def test_conv_into_bn_gets_whole_batch_stats_and_its_gradient(reduce_at):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.normal_()
    x = torch.randn(48, 3, 6, 6) * 3 + 1
    y = torch.randint(0, 5, (48,))
    points = {p.name: p for p in resolve(model).points}
    assert points["0"].bn_next and not points["1"].bn_next and not points["4"].bn_next

    rec = gradlab.watch(model, every=1, act_sample=16, reduce_at=reduce_at)
    kept, handles = capture(model, ["0", "1"])
    F.cross_entropy(model(x), y).backward()
    rec.step()
    for h in handles:
        h.remove()
    df = rec.frame().set_index(["layer", "stat"])["value"]
    rec.stop()

    conv, bn = kept["0"].detach().double(), kept["1"].detach().double()
    # the conv's output: the whole batch (the BatchNorm normalised all 48 examples)
    assert df[("0", "act_mean")] == pytest.approx(conv.mean().item(), rel=1e-5, abs=1e-6)
    assert df[("0", "act_std")] == pytest.approx(conv.std(unbiased=False).item(), rel=1e-4)
    assert conv[:16].std(unbiased=False).item() != pytest.approx(conv.std(unbiased=False).item(), rel=1e-3)
    # the BatchNorm's own output: mean and std of the whole batch (from gamma, beta and its
    # statistics), the fraction a ReLU zeroes on its first 16 examples, as everywhere else
    assert df[("1", "act_mean")] == pytest.approx(bn.mean().item(), rel=1e-5, abs=1e-6)
    assert df[("1", "act_std")] == pytest.approx(bn.std(unbiased=False).item(), rel=1e-5)
    assert bn[:16].std(unbiased=False).item() != pytest.approx(bn.std(unbiased=False).item(), rel=1e-3)
    assert df[("1", "act_zero_frac")] == pytest.approx((bn[:16] <= 0).double().mean().item(), abs=1e-9)
    # dL/dh from the BatchNorm's backward node: dL/dx and dL/dy
    assert df[("0", "act_grad_norm")] == pytest.approx(kept["0"].grad.double().norm().item(), rel=1e-5)
    assert df[("1", "act_grad_norm")] == pytest.approx(kept["1"].grad.double().norm().item(), rel=1e-5)


def test_zoo_points_that_feed_a_batchnorm():
    def fed(name, **kw):
        return {p.name for p in models.build(name, **kw).probe_points() if p.bn_next}

    assert fed("resnet20", shortcut="B") == {
        "conv1",
        *(f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2)),
        "layer2.0.shortcut.0",
        "layer3.0.shortcut.0",
    }
    assert fed("plain20") == {"conv1", *(f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2))}
    # pre-activation: the stem's output also takes the shortcut, and conv2 ends the branch
    assert fed("preresnet110") == {f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(18)}


def test_zoo_block_stats_match_unpaired_recording():
    """Every statistic of a zoo ResNet equals what the recorder measures when no point is
    paired with its BatchNorm (the sample is the whole batch here, so both are exact)."""
    torch.manual_seed(0)
    model = models.build("resnet20", shortcut="B")
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))

    def frame(paired):
        m = models.build("resnet20", shortcut="B")
        m.load_state_dict(model.state_dict())
        rec = gradlab.watch(m, every=1, act_sample=None)
        if not paired:
            rec._inst.hooks.arm(False)
            for pt in rec._inst.hooks.taps:
                pt.fed, pt.feeder = False, None
            rec._inst.hooks.arm(True)
        F.cross_entropy(m(x), y).backward()
        rec.step()
        df = rec.frame()
        rec.stop()
        return df.set_index(["layer", "stat"])["value"].sort_index()

    a, b = frame(True), frame(False)
    assert list(a.index) == list(b.index)
    torch.testing.assert_close(torch.tensor(a.values), torch.tensor(b.values), rtol=2e-4, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("reduce_at", ["hooks", "step"])
def test_gradient_accumulation_keeps_the_last_micro_batch_activations_and_every_gradient(reduce_at):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 16, 2))
    batches = [torch.randn(32, 2, 4, 4) * s + s for s in (1.0, 3.0)]
    rec = gradlab.watch(model, every=1, act_sample=8, reduce_at=reduce_at)
    model[1].eps = 1.0  # so that the BatchNorm's output std, sqrt(var / (var + eps)), differs between them
    kept, handles = capture(model, ["0", "1"])
    bn_outs, outs = [], []
    for xb in batches:
        model(xb).pow(2).mean().backward()
        last, last_bn = kept["0"], kept["1"]
        outs.append((last, last_bn))
        bn_outs.append(kept["1"].detach().double())
    rec.step()
    for h in handles:
        h.remove()
    df = rec.frame().set_index(["layer", "stat"])["value"]
    assert rec._inst.hooks.taps[0].fed and rec._inst.hooks.taps[0].checked  # two micro-batches did not unpair it
    rec.stop()
    conv = last.detach().double()
    assert df[("0", "act_mean")] == pytest.approx(conv.mean().item(), rel=1e-5)
    assert df[("0", "act_std")] == pytest.approx(conv.std(unbiased=False).item(), rel=1e-4)
    # dL/dh over the step's whole batch: both micro-batches' gradients (the optimizer step's scale)
    for layer, i in (("0", 0), ("1", 1)):
        both = torch.cat([o[i].grad.double().flatten() for o in outs]).norm().item()
        assert df[(layer, "act_grad_norm")] == pytest.approx(both, rel=1e-5)
    first_std, last_std = (b.std(unbiased=False).item() for b in bn_outs)
    assert first_std != pytest.approx(last_std, rel=1e-2)
    # the BatchNorm's own output, from its statistics: the last micro-batch's too
    assert df[("1", "act_mean")] == pytest.approx(bn_outs[1].mean().item(), abs=1e-6)
    assert df[("1", "act_std")] == pytest.approx(last_std, rel=1e-5)


class _Rerouted(nn.Module):
    """A Sequential(conv, bn) whose parent does not feed the conv's output to the BN as is."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3))

    def forward(self, x):
        conv, bn = self.body
        return bn(2 * conv(x) + 1).flatten(1).sum(1)


def _one_step(model, rec, x, names):
    kept, handles = capture(model, names)
    model(x).pow(2).mean().backward()
    rec.step()
    for h in handles:
        h.remove()
    model.zero_grad()
    return kept


def _assert_measured_on_sample(rec, layer, h, n):
    """The last recorded step's act_mean/act_std of ``layer`` are those of h's first n
    examples, and its act_grad_norm is ||dL/dh||."""
    df = rec.frame()
    df = df[df.step == df.step.max()].set_index(["layer", "stat"])["value"]
    sample = h.detach()[:n].double()
    assert df[(layer, "act_mean")] == pytest.approx(sample.mean().item(), rel=1e-5)
    assert df[(layer, "act_std")] == pytest.approx(sample.std(unbiased=False).item(), rel=1e-4)
    assert df[(layer, "act_grad_norm")] == pytest.approx(h.grad.double().norm().item(), rel=1e-5)
    return df


@pytest.mark.parametrize("reduce_at", ["hooks", "step"])
def test_a_bn_fed_something_else_unpairs_and_the_conv_measures_itself(reduce_at):
    torch.manual_seed(2)
    model = _Rerouted()
    assert resolve(model).points[0].bn_next  # nn.Sequential adjacency says so; the forward does not
    x = torch.randn(24, 2, 5, 5) + 0.5
    rec = gradlab.watch(model, every=1, act_sample=8, reduce_at=reduce_at)
    for _ in range(2):  # the step that finds out, and one with the conv's own hook
        conv = _one_step(model, rec, x, ["body.0"])["body.0"]
        _assert_measured_on_sample(rec, "body.0", conv, 8)
    assert not rec._inst.hooks.taps[0].fed and rec._inst.hooks.taps[1].feeder is None
    rec.stop()


def test_a_bn_in_eval_mode_leaves_its_conv_measured():
    """Fine-tuning with frozen BatchNorms (model.train(), then bn.eval()): no batch statistics
    to read, so the conv is measured on its sample; dL/dx still comes from the BN's node."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Flatten())
    model.train()
    model[1].eval()
    x = torch.randn(24, 2, 5, 5) + 0.5
    rec = gradlab.watch(model, every=1, act_sample=8)
    for _ in range(2):
        conv = _one_step(model, rec, x, ["0"])["0"]
        df = _assert_measured_on_sample(rec, "0", conv, 8)
        assert ("1", "act_mean") not in df.index  # the BN itself is not in training
    rec.stop()
