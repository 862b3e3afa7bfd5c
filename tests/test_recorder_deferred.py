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
    assert not q._grads and len(q._norms) == 2
    q.finish()
    row = torch.full((4,), float("nan"))
    assert sorted(q.write(row)) == [0, 1, 2]
    assert row[:3].tolist() == [3.0, 4.0, 4.0] and row[3].isnan()


def test_reduce_at_is_checked():
    with pytest.raises(RecorderError, match="reduce_at must be one of auto, hooks, step"):
        gradlab.watch(nn.Linear(2, 2), reduce_at="later")


def test_auto_reduces_in_the_hooks_on_a_cpu():
    with gradlab.watch(nn.Linear(2, 2)) as rec:
        assert rec.reductions == "hooks"


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
    assert q._samples and q._grads  # copies and dL/dh of the step, waiting for rec.step()
    rec.stop()
    assert not q._samples and not q._grads and not q._wants



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
