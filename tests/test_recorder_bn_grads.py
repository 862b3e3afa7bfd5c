"""In the hooks (the CPU default), a BatchNorm's ||dL/dy|| and the ||dL/dx|| of the conv
feeding it come from one pass over dL/dy and the BatchNorm's weight and bias gradients
(gradlab.recorder.bn_grads). Known answers from the gradients themselves; every case where
the formula does not apply falls back to taking both norms directly."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from tests.kept_outputs import capture


class _Doubled(nn.BatchNorm2d):
    """A BatchNorm subclass that scales by 2 * weight: the formula with its gamma is wrong."""

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, 2 * self.weight, self.bias, True, 0.1, self.eps)


class _TwoBatchSizes(nn.Module):
    """The second conv/BN pair sees the batch folded in two along the height: twice the examples."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 4, 3))

    def forward(self, x):
        h = self.a(x)
        return self.b(h.reshape(2 * h.shape[0], h.shape[1], h.shape[2] // 2, h.shape[3]))


def _model(bn=nn.BatchNorm2d):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), bn(4), nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1), bn(5), nn.Flatten(), nn.Linear(5 * 36, 3),
    )  # fmt: skip
    for m in model:
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            with torch.no_grad():
                m.weight.uniform_(0.5, 2.0)
                m.bias.normal_()
    return model


def _gradients(model, rec, x, names, steps=2, create_graph=False, loss_scale=1.0):
    """Train ``steps`` recorded steps; returns the last step's act_grad_norm per layer and
    the true ||dL/dh|| of ``names`` from retained gradients."""
    for _ in range(steps):
        kept, handles = capture(model, names)
        out = model(x)
        loss = F.cross_entropy(out, torch.arange(len(out)) % out.shape[1]) * loss_scale
        loss.backward(create_graph=create_graph)
        rec.step()
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    df = rec.frame()
    df = df[(df.step == df.step.max()) & (df.stat == "act_grad_norm")].set_index("layer")["value"]
    return df, {n: kept[n].grad.double().norm().item() for n in names}


@pytest.mark.parametrize("eps", [1e-5, 1.0])  # eps = 1: var / (var + eps) is far from 1 (r in the formula)
def test_conv_and_bn_gradient_norms_are_derived_in_the_hooks(eps):
    model = _model(lambda c: nn.BatchNorm2d(c, eps=eps))
    rec = gradlab.watch(model, every=1, reduce_at="hooks")
    df, true = _gradients(model, rec, torch.randn(24, 3, 6, 6) * 0.5 + 1, ["0", "1", "3", "4"])
    assert rec._inst.hooks.bn_grads._valid == {1: True, 3: True}  # both BatchNorms (probe points 1 and 3) passed the check
    rec.stop()
    for name, value in true.items():
        assert df[name] == pytest.approx(value, rel=1e-5), name


def test_tiny_gradients_keep_their_precision():
    """|dL/dh| ~ 1e-16: squares near 1e-32, far below the usual, still exact to 1e-5
    (below ~1e-19 they leave float32's normal range: see gradlab.recorder.bn_grads)."""
    model = _model()
    rec = gradlab.watch(model, every=1, reduce_at="hooks")
    df, true = _gradients(model, rec, torch.randn(24, 3, 6, 6), ["0", "1", "3", "4"], loss_scale=1e-15)
    assert rec._inst.hooks.bn_grads._valid == {1: True, 3: True}
    rec.stop()
    for name, value in true.items():
        assert 1e-19 < value < 1e-13
        assert df[name] == pytest.approx(value, rel=1e-5), name


def test_deferred_reductions_keep_dx_itself():
    model = _model()
    rec = gradlab.watch(model, every=1, reduce_at="step")
    df, true = _gradients(model, rec, torch.randn(24, 3, 6, 6), ["0", "1", "3", "4"])
    assert rec._inst.hooks.bn_grads._valid == {}
    rec.stop()
    for name, value in true.items():
        assert df[name] == pytest.approx(value, rel=1e-5), name


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")
@pytest.mark.parametrize(
    "case",
    ["no affine parameters", "a subclass scaling by 2 * weight", "channels_last", "create_graph"],
)
def test_where_the_formula_does_not_apply_both_norms_are_taken_directly(case):
    bn = {"no affine parameters": lambda c: nn.BatchNorm2d(c, affine=False), "a subclass scaling by 2 * weight": _Doubled}
    model = _model(bn.get(case, nn.BatchNorm2d))
    x = torch.randn(24, 3, 6, 6) + 0.5
    if case == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    rec = gradlab.watch(model, every=1, reduce_at="hooks")
    df, true = _gradients(model, rec, x, ["0", "1", "3", "4"], create_graph=case == "create_graph")
    derived = rec._inst.hooks.bn_grads._valid
    rec.stop()
    if case == "channels_last":  # the first BN's dL/dy is channels_last (the last one's comes back contiguous)
        assert 1 not in derived
    else:
        assert derived == ({1: False, 3: False} if case.startswith("a subclass") else {})
    for name, value in true.items():
        assert df[name] == pytest.approx(value, rel=1e-5), name


def test_batchnorms_with_different_batch_sizes_in_one_step():
    torch.manual_seed(1)
    model = _TwoBatchSizes()
    rec = gradlab.watch(model, every=1, reduce_at="hooks")
    df, true = _gradients(model, rec, torch.randn(16, 2, 4, 4), ["a.0", "a.1", "b.0", "b.1"])
    assert rec._inst.hooks.bn_grads._valid == {1: True, 3: True}
    rec.stop()
    for name, value in true.items():
        assert df[name] == pytest.approx(value, rel=1e-5), name



def _kept_per_step(model, rec, x, steps=3, micro=1):
    """Train ``steps`` SGD steps of ``micro`` backward passes; per step, the BatchNorms (by
    key) whose dL/dy was kept for write() rather than reduced to rows in the hook."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kept = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        for xs in x.chunk(micro):
            out = model(xs)
            F.cross_entropy(out, torch.arange(len(out)) % out.shape[1]).backward()
        kept.append(sorted(key for key, q in rec._inst.hooks.bn_grads.queued if q[-1] > 1))
        rec.step()
        opt.step()
    return kept


@pytest.mark.parametrize("micro", [1, 2])
def test_on_a_cpu_dl_dy_is_kept_for_step_and_read_there_within_a_bound(micro):
    """After the first backward (which checks the formula on rows taken in the hook), dL/dy
    is kept, a reference, and read by write()'s one kernel call; past ``keep_bytes`` in a
    step the rest are reduced in their hooks. Values: the true norms either way."""
    from gradlab.recorder import native

    if native.library() is None:
        pytest.skip("no fused CPU kernels here")
    x = torch.randn(24, 3, 6, 6) * 0.5 + 1
    last = (24 // micro) * 5 * 36 * 4  # the bytes of the last BatchNorm's dL/dy in one backward (it runs first)
    for bound, expected in ((None, [1, 3] * micro), (last, [3])):  # (the first backward checks: kept from the next)
        first = [] if micro == 1 else sorted(set(expected))  # (a second micro-batch: already checked)
        model = _model()
        rec = gradlab.watch(model, every=1, reduce_at="hooks")
        if bound is not None:
            rec._inst.hooks.bn_grads.keep_bytes = bound
        kept = _kept_per_step(model, rec, x, micro=micro)
        assert kept == [first, sorted(expected), sorted(expected)]
        df, true = _gradients(model, rec, x, ["0", "1", "3", "4"], steps=1)
        rec.stop()
        for name, value in true.items():
            assert df[name] == pytest.approx(value, rel=1e-5), (bound, name)
