"""A BatchNorm's own act_mean and act_std come from gamma, beta and its batch statistics
(gradlab.recorder.bn_stats): the whole batch's, without a pass over the output. Known answers
from the captured tensors, in both reduction modes."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab import stat_names as S
from gradlab.models import build


def _record(model, x, y, names, steps=1, before_step=None, **watch_args):
    """Train ``steps`` steps, each recorded; returns the values of each step (a Series
    indexed by step, layer and stat) and the last (input, output) of each module in ``names``."""
    kept, mods = {}, dict(model.named_modules())

    def keep(name):
        return lambda m, args, out: kept.__setitem__(name, (args[0].detach().clone(), out.detach().clone()))

    rec = gradlab.watch(model, every=1, **watch_args)
    handles = [mods[n].register_forward_hook(keep(n)) for n in names]
    try:
        for _ in range(steps):
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if before_step is not None:
                before_step()
            rec.step()
        df = rec.frame()
    finally:
        rec.stop()
        for h in handles:
            h.remove()
    return df.set_index(["step", "layer", "stat"])["value"], kept


def _net(bn: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), bn, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    if bn.affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
    return model


@pytest.mark.parametrize("reduce_at", ["hooks", "step"])
@pytest.mark.parametrize("affine", [True, False])
def test_bn_output_mean_and_std_are_the_whole_batch(reduce_at, affine):
    model = _net(nn.BatchNorm2d(4, affine=affine))
    x, y = torch.randn(48, 3, 6, 6) * 3 + 1, torch.randint(0, 5, (48,))
    df, kept = _record(model, x, y, ["1"], act_sample=16, reduce_at=reduce_at)
    out = kept["1"][1].double()
    assert df[(0, "1", S.ACT_MEAN)] == pytest.approx(out.mean().item(), abs=1e-6)
    assert df[(0, "1", S.ACT_STD)] == pytest.approx(out.std(unbiased=False).item(), rel=1e-5)
    assert out[:16].std(unbiased=False).item() != pytest.approx(out.std(unbiased=False).item(), rel=1e-3)
    # the fraction a ReLU zeroes is still counted on the sample, with the sample's size
    assert df[(0, "1", S.ACT_ZERO_FRAC)] == pytest.approx((out[:16] <= 0).double().mean().item(), abs=1e-9)


def test_step_after_the_optimizer_uses_gamma_and_beta_of_the_forward():
    model = _net(nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=5.0)  # large: moves beta far
    x, y = torch.randn(32, 3, 6, 6), torch.randint(0, 5, (32,))
    before = model[1].bias.detach().clone()
    # rec.step() after opt.step(): allowed, and the values are those of the forward
    df, kept = _record(model, x, y, ["1"], before_step=opt.step, act_sample=8)
    assert not torch.allclose(before, model[1].bias)
    out = kept["1"][1].double()
    assert df[(0, "1", S.ACT_MEAN)] == pytest.approx(out.mean().item(), abs=1e-6)
    assert df[(0, "1", S.ACT_STD)] == pytest.approx(out.std(unbiased=False).item(), rel=1e-5)


class ScaledBN(nn.BatchNorm2d):
    """A BatchNorm whose output is not gamma * xhat + beta of its own parameters."""

    def forward(self, x):
        return F.batch_norm(x, None, None, 2 * self.weight, self.bias, True, 0.0, self.eps)


def test_a_batchnorm_computing_something_else_is_measured_on_its_sample():
    model = _net(ScaledBN(4))
    x, y = torch.randn(48, 3, 6, 6), torch.randint(0, 5, (48,))
    # the check fails on the first step; the second measures the sample straight away
    df, kept = _record(model, x, y, ["1"], steps=2, act_sample=16)
    out = kept["1"][1].double()  # the same batch both steps: the same outputs
    for step in (0, 1):
        assert df[(step, "1", S.ACT_STD)] == pytest.approx(out[:16].std(unbiased=False).item(), rel=1e-5)


@pytest.mark.parametrize("reduce_at", ["hooks", "step"])
def test_zoo_block_branch_ratio_compares_root_mean_square_per_example(reduce_at):
    """bn2's output (the branch F(x)) is the whole batch's, the block input x the sample's:
    the ratio is sqrt(mean ||F(x)_i||^2 / mean ||x_i||^2) over the examples each covers."""
    torch.manual_seed(0)
    model = build("resnet20")
    x, y = torch.randn(24, 3, 32, 32), torch.randint(0, 10, (24,))
    blocks = ["layer1.1", "layer2.0"]  # an identity block and a downsampling one
    names = [n + ".bn2" for n in blocks] + blocks
    df, kept = _record(model, x, y, names, act_sample=8, reduce_at=reduce_at)
    for b in blocks:
        branch, block_in = kept[b + ".bn2"][1].double(), kept[b][0].double()
        expected = (branch.square().sum() / 24).sqrt() / (block_in[:8].square().sum() / 8).sqrt()
        assert df[(0, b, S.BRANCH_RATIO)] == pytest.approx(expected.item(), rel=1e-5)
        assert df[(0, b + ".bn2", S.ACT_STD)] == pytest.approx(branch.std(unbiased=False).item(), rel=1e-5)
        assert df[(0, b + ".branch_out", S.ACT_STD)] == pytest.approx(df[(0, b + ".bn2", S.ACT_STD)], rel=1e-6)


def test_a_lazy_batchnorm_watched_before_its_first_forward_is_measured_on_its_sample():
    """...and the BatchNorms after it still get their own gamma and beta."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.LazyBatchNorm2d(), nn.ReLU(),
                          nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    with torch.no_grad():
        model[4].weight.uniform_(0.5, 2.0)
        model[4].bias.normal_()
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    df, kept = _record(model, x, y, ["1", "4"], steps=2, act_sample=4)
    lazy, regular = kept["1"][1].double(), kept["4"][1].double()
    assert df[(1, "1", S.ACT_STD)] == pytest.approx(lazy[:4].std(unbiased=False).item(), rel=1e-5)
    assert df[(1, "4", S.ACT_MEAN)] == pytest.approx(regular.mean().item(), abs=1e-6)
    assert df[(1, "4", S.ACT_STD)] == pytest.approx(regular.std(unbiased=False).item(), rel=1e-5)
