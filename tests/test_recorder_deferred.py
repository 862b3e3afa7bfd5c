"""Deferred reductions (reduce_at="step", the CUDA default) record what the hooks record."""

import copy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab.errors import RecorderError
from gradlab.models import build
from gradlab.recorder.deferred import DeferredReductions
from gradlab.recorder.statistics import COUNT, NORM, SUM
from gradlab.recorder.reductions import COUNT_UNIT
from tests.recorder_frames import assert_same, frames


def hooks_and_step(*args, **kwargs):
    out = frames(*args, **kwargs)
    assert [out[w][0] for w in ("hooks", "step")] == ["hooks", "step"]  # rec.reductions
    return out["hooks"][1], out["step"][1]


@pytest.mark.parametrize("name,autocast", [("resnet20", False), ("plain20", True)])
def test_deferred_reductions_record_the_same_frame_as_the_hooks(name, autocast):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    hooks, step = hooks_and_step(build(name), x, y, autocast=autocast, act_sample=4)
    assert_same(hooks, step, rtol=1e-3 if autocast else 1e-4)
    stats = set(step["stat"])
    assert {"act_mean", "act_std", "act_zero_frac", "act_grad_norm", "grad_norm"} <= stats
    assert "branch_ratio" in stats  # plain twins have the same blocks, without the shortcut


def test_deferred_samples_are_copies_an_in_place_relu_cannot_change():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,))
    hooks, step = hooks_and_step(model, x, y, steps=1)
    assert_same(hooks, step)
    # known answer: the BN point's statistics are those of its output before the in-place ReLU
    with torch.no_grad():
        bn_out = model[1](model[0](x))
    row = step[(step["layer"] == "1") & (step["stat"] == "act_mean")]
    np.testing.assert_allclose(row["value"].item(), bn_out.mean().item(), atol=1e-6)
    zero = step[(step["layer"] == "1") & (step["stat"] == "act_zero_frac")]["value"].item()
    assert zero == pytest.approx((bn_out <= 0).float().mean().item())  # the ReLU after it zeroes these


def test_deferred_known_answers_and_early_gradient_reduction():
    row = torch.full((6,), float("nan"))
    vals = [None] * 3
    first = lambda h: 2 if h.shape[0] == 3 else None  # noqa: E731 (the sample: b's first two examples)
    q = DeferredReductions(torch.device("cpu"), vals, first, grad_bytes=8)  # two float32 values: the second gradient reduces early
    a, b, c = (SimpleNamespace(sample=None) for _ in range(3))  # what the hooks know of each output
    h_a = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    q.output(a, h_a, ((SUM, 0), (NORM, 1)), True)
    q.output(b, torch.tensor([[0.0, 0.0], [5.0, -1.0], [7.0, 7.0]]), ((COUNT, 2),), True)  # a's shape: one stack with a
    q.output(c, torch.tensor([2.0, 0.0]), ((COUNT, 3), (NORM, 4)), True)
    q.output(a, h_a, ((COUNT, 4),), True)  # a second request for column 4: the last one wins (a copied once)
    assert len(q._samples) == 3
    cols = q.write(row)
    assert sorted(cols) == [0, 1, 2, 3, 4]
    torch.testing.assert_close(row[:2], torch.tensor([2.0, 14 ** 0.5]))
    assert (row[2:5] / COUNT_UNIT).tolist() == [1.0, 1.0, 2.0]  # counts of positives, in COUNT_UNIT
    assert row[5].isnan()

    q.clear()
    q.grad(torch.tensor([3.0]), [0])
    q.grad(torch.tensor([0.0, 4.0]), [1, 2])  # 12 bytes held > 8: both reduced now
    assert not q.grads._grads and sum(n.numel() for n, _ in q.grads._norms) == 2  # (a stack per shape, or one fused call)
    q.finish()
    row = torch.full((4,), float("nan"))
    assert sorted(q.write(row)) == [0, 1, 2]
    assert row[:3].tolist() == [3.0, 4.0, 4.0] and row[3].isnan()


def test_reduce_at_is_checked():
    with pytest.raises(RecorderError, match="reduce_at must be one of auto, hooks, step, mixed"):
        gradlab.watch(nn.Linear(2, 2), reduce_at="later")


def test_auto_mixes_on_a_cpu_small_tensors_kept_and_large_ones_reduced_in_the_hooks():
    with gradlab.watch(nn.Linear(2, 2)) as rec:
        assert rec.reductions == "mixed"
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
    with gradlab.watch(model, every=1, dense_until=0) as rec:
        reducer = rec._inst.hooks.reducer
        reducer.small = 16  # the first output (2 x 8) is kept, the second (2 x 3) too; a wider batch is not
        F.cross_entropy(model(torch.randn(2, 4)), torch.tensor([0, 1])).backward()
        assert len(reducer.deferred._samples) == 2
        rec.step()
        F.cross_entropy(model(torch.randn(4, 4)), torch.tensor([0, 1, 2, 0])).backward()  # 4 x 8 = 32 > 16
        assert len(reducer.deferred._samples) == 1  # only the 4 x 3 output
        rec.step()
        df = rec.frame()
    assert set(df.step) == {0, 1} and df[df.stat == "act_mean"].groupby("step").size().tolist() == [2, 2]


def test_deferred_with_gradient_accumulation_and_histograms_matches_the_hooks():
    torch.manual_seed(2)
    model = build("resnet8")
    x, y = torch.randn(12, 3, 32, 32), torch.randint(0, 10, (12,))
    got = {}
    for where in ("hooks", "step"):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        with gradlab.watch(m, every=1, dense_until=0, reduce_at=where, act_sample=None, histograms=True,
                           hist_every=1) as rec:
            for _ in range(2):
                opt.zero_grad(set_to_none=True)
                for part in (slice(0, 6), slice(6, 12)):  # two micro-batches per step
                    F.cross_entropy(m(x[part]), y[part]).backward()
                rec.step()
                opt.step()
            got[where] = rec.frame(), rec.histograms()
    assert_same(got["hooks"][0], got["step"][0])
    pd.testing.assert_frame_equal(got["hooks"][1], got["step"][1])


def test_stop_drops_what_an_unrecorded_step_left_behind():
    model = build("resnet8")
    rec = gradlab.watch(model, every=1, reduce_at="step")
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,))).backward()
    q = rec._inst.hooks.reducer
    assert q._samples and q.grads._grads  # copies and dL/dh of the step, waiting for rec.step()
    rec.stop()
    assert not q._samples and not q.grads._grads and not q._wants



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_count_of_positives_in_every_dtype(dtype):
    from gradlab.recorder.reductions import count

    x = torch.tensor([[3.0, 0.0, -1.0, 1e-3], [0.0, 0.0, 2.0, -0.0]], dtype=dtype)
    whole, rows = count(x), count(x, dim=1)
    assert whole.dtype == rows.dtype == torch.float32
    assert (whole / COUNT_UNIT).item() == 3.0
    assert (rows / COUNT_UNIT).tolist() == [2.0, 1.0]
    nan = count(torch.tensor([1.0, float("nan")], dtype=dtype))
    assert nan.isnan() if dtype != torch.float16 else (nan / COUNT_UNIT).item() == 1.0  # (sign(nan) is 0)


class _InPlaceAfter(nn.Module):
    """a's output is changed in place by the forward (a functional relu_), b's is not."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.b(self.a(x).relu_())


def test_a_kept_gradient_is_that_of_the_output_before_a_later_in_place_change():
    """Small outputs keep their gradient with retain_grad, which would follow the in-place
    relu_: the first recorded step learns that a's output is changed and hooks it from then on."""
    torch.manual_seed(0)
    model = _InPlaceAfter()
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    rec = gradlab.watch(model, every=1, dense_until=0)
    expected = []
    for _ in range(3):
        z = F.linear(x, model.a.weight, model.a.bias).detach().requires_grad_()  # (not through the hooks)
        out = F.linear(z.relu(), model.b.weight, model.b.bias)
        out.retain_grad()
        F.cross_entropy(out, y).backward()
        expected.append((z.grad.norm().item(), out.grad.norm().item()))
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        rec.step()
        model.zero_grad()
    kept = rec._inst.hooks.reducer.deferred.grads
    df = rec.frame().set_index(["step", "layer", "stat"])["value"]
    rec.stop()
    a_col = next(p.grad_col for p, point in zip(rec._inst.layout.points, rec.probe_points) if point.name == "a")
    assert kept._in_place == {a_col}  # learned on the first recorded step: a's output is changed in place
    for step, (dz, dout) in enumerate(expected):
        assert df[(step, "a", "act_grad_norm")] == pytest.approx(dz, rel=1e-5)  # before the relu_, not after
        assert df[(step, "b", "act_grad_norm")] == pytest.approx(dout, rel=1e-5)


@pytest.mark.parametrize("sizes", [(5, 4), (4, 5)])
def test_micro_batches_on_either_side_of_the_small_size_are_reduced_by_one_half(sizes):
    """Mixed on a CPU: an output of 5 x 3500 elements is reduced in its hook, one of 4 x 3500
    kept for step() (``small`` is 16k). Micro-batches of those two sizes in one step stay with
    the half that took the first, a lean hook's too (learned on 4 x 4 at the first step): the
    gradient norms combine over both, the last call's activation values win, as with the hooks."""

    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Linear(4, 3500), nn.Linear(3500, 3)

        def forward(self, x):
            return self.c(torch.relu(self.a(x)))

    torch.manual_seed(0)
    model = Wide()
    g = torch.Generator().manual_seed(1)
    splits = [(4, 4)] + [sizes] * 3
    batches = [(torch.randn(sum(n), 4, generator=g), torch.randint(0, 3, (sum(n),), generator=g)) for n in splits]
    got = {}
    for where in ("hooks", "mixed"):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        with gradlab.watch(m, every=1, dense_until=0, act_sample=None, reduce_at=where) as rec:
            for (x, y), split in zip(batches, splits):
                opt.zero_grad(set_to_none=True)
                for xs, ys in zip(x.split(list(split)), y.split(list(split))):
                    F.cross_entropy(m(xs), ys).backward()
                rec.step()
                opt.step()
            if where == "mixed":
                assert rec._inst.hooks.taps[0].fast is not None  # a's lean hook took the 4-row calls
            got[where] = rec.frame()
    assert_same(got["hooks"], got["mixed"])
