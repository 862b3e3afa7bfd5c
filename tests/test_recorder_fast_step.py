"""A recorded step whose kept tensors all came through the lean hooks is reduced by one kernel
call (gradlab.recorder.fast_step), with the general path's values to the bit; any step the
plans do not describe (micro-batches, a general hook's call, a non-contiguous output, a
missing gradient, float64) takes the general path and records what the hooks record."""

from __future__ import annotations

import copy
import shutil
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab.bench.transformer import tiny_transformer
from gradlab.models import build
from gradlab.recorder import native
from gradlab.recorder.fast_step import FastStep
from gradlab.recorder.mixed import deferred_of
from tests.recorder_frames import assert_same

pytestmark = [pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)"),
              pytest.mark.usefixtures("fresh_native")]  # (tests/conftest.py)


def _record(model, batches, lane: bool = True, micro: int = 1, **watch):
    """(frame, raw values where written, written, kernel calls of the one-call path, lean
    hooks' entries handed to the general path) of SGD steps over ``batches``, each in
    ``micro`` forward/backward passes."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    lib = native.library()
    calls, handed = [], []
    kernel, take = lib.planned_stats, FastStep.take
    lib.planned_stats = lambda *a: calls.append(1) or kernel(*a)
    FastStep.take = lambda self: handed.extend(self.entries) or take(self)
    try:
        with gradlab.watch(model, every=1, dense_until=0, **watch) as rec:
            deferred = deferred_of(rec._inst.hooks.reducer)  # (mixed's, or "step": the deferred path itself)
            if deferred is not None:
                deferred.fast.on = lane
            for x, y in batches:
                opt.zero_grad(set_to_none=True)
                for xs, ys in zip(x.chunk(micro), y.chunk(micro)):
                    F.cross_entropy(model(xs), ys).backward()
                rec.step()
                opt.step()
            buffer = rec._inst.buffer
            written = buffer.written[: buffer.count].copy()
            raw = np.where(written, buffer.values[: buffer.count, : written.shape[1]].numpy(), np.nan)
            frame = rec.frame()
    finally:
        lib.planned_stats, FastStep.take = kernel, take
    return frame, raw, written, len(calls), len(handed)


def _transformer(batches: int = 5, dtype=torch.float32):
    model, (x, y) = tiny_transformer(depth=2, batch=4)
    return model.to(dtype), [(x, y)] * batches


def _same_bits(a, b):
    assert (a[2] == b[2]).all()  # the same columns written
    np.testing.assert_array_equal(a[1], b[1])  # and the same float32 values, NaN where not written


@pytest.mark.parametrize("watch", [{}, {"act_sample": 2}, {"reduce_at": "step"}])
def test_a_planned_step_is_one_kernel_call_with_the_general_paths_values(watch):
    model, batches = _transformer()
    lane, general = _record(model, batches, **watch), _record(model, batches, lane=False, **watch)
    assert lane[3] == len(batches) - 1 and lane[4] == 0  # from the step after the plans were learned
    assert general[3] == 0 and general[4] > 0
    _same_bits(lane, general)
    hooks = {k: v for k, v in watch.items() if k != "reduce_at"}
    assert_same(lane[0], _record(model, batches, reduce_at="hooks", **hooks)[0])
    grads = lane[0][lane[0]["stat"] == "act_grad_norm"]
    assert grads.groupby("step")["value"].count().nunique() == 1  # every step, every point's dL/dh


class _Transposed(nn.Linear):
    """A linear layer (a probe point of its own) whose output is a transposed view: not contiguous."""

    def forward(self, x):
        return super().forward(x).t()


class _Odd(nn.Module):
    """``t`` returns a non-contiguous output (``transposed``), or ``side`` an output that never
    reaches the loss (its dL/dh never comes)."""

    def __init__(self, transposed: bool):
        super().__init__()
        self.a, self.c = nn.Linear(4, 6), nn.Linear(6, 3)
        self.t = _Transposed(6, 6) if transposed else None
        self.side = None if transposed else nn.Linear(6, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        if self.t is not None:
            h = self.t(h).t().contiguous()
        else:
            self.side(h)
        return self.c(h)


def _odd(transposed: bool, batches: int = 5):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    return _Odd(transposed), [(torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g))] * batches


@pytest.mark.parametrize("case", ["micro-batches", "non-contiguous", "no gradient", "float64", "general calls"])
def test_steps_the_plans_do_not_describe_take_the_general_path(case):
    micro = 1
    if case == "micro-batches":  # (each point met twice in a step)
        (model, batches), micro = _transformer(), 2
    elif case in ("non-contiguous", "no gradient"):
        model, batches = _odd(transposed=case == "non-contiguous")
    elif case == "float64":
        model, batches = _transformer(dtype=torch.float64)
    else:  # a ResNet: BatchNorm pairs and shared outputs keep the general hooks, between the lean ones
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        model = build("resnet8")
        batches = [(torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 10, (2,), generator=g))] * 4
    lane = _record(model, batches, micro=micro)
    assert lane[3] == 0 and lane[4] > 0  # lean hooks ran, and their entries went the general way
    _same_bits(lane, _record(model, batches, lane=False, micro=micro))
    assert_same(lane[0], _record(model, batches, micro=micro, reduce_at="hooks")[0])


def test_a_step_that_calls_a_planned_point_on_another_shape_keeps_the_order_of_calls():
    """From step 3 on ``b`` sees a wider input once more after the planned calls: the general
    hook takes that call, after the lean hooks' entries were handed over in their order."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.b(torch.relu(self.a(x)))
            if self.calls > 3:
                out = out + self.b(torch.relu(self.a(torch.cat([x, x])))).view(2, -1, 3).mean(0)
            return out

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g))] * 6
    model = Twice()
    lane = _record(model, batches)
    assert lane[3] == 2 and lane[4] > 0  # steps 1 and 2: only planned calls; then handed over
    _same_bits(lane, _record(model, batches, lane=False))
    assert_same(lane[0], _record(model, batches, reduce_at="hooks")[0])


def test_the_lane_holds_no_tensor_past_its_step():
    model, ((x, y),) = _transformer(batches=1)
    seen = []
    model.encoder.layers[0].linear1.register_forward_hook(lambda m, a, out: seen.append(weakref.ref(out)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gradlab.watch(model, every=1, dense_until=0) as rec:
        fast = rec._inst.hooks.reducer.deferred.fast
        for step in range(3):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            assert bool(fast.entries) == (step > 0)  # kept until step(), once the plans are learned
            rec.step()
            opt.step()
            assert not fast.entries
        assert seen[-1]() is None  # the planned output died with its step


def test_kernels_turned_off_mid_run_leave_a_cached_lane_working(monkeypatch):
    """The lane holds its kernel: ``native.reset()`` with GRADLAB_NATIVE=0 after it was built
    (tests do that) neither crashes the step nor changes its values."""
    model, batches = _transformer(batches=4)
    expected = _record(model, batches)
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with gradlab.watch(model, every=1, dense_until=0) as rec:
        for step, (x, y) in enumerate(batches):
            if step == 3:
                monkeypatch.setenv("GRADLAB_NATIVE", "0")
                native.reset()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            rec.step()
            opt.step()
        frame = rec.frame()
    pd.testing.assert_frame_equal(frame, expected[0])


def test_no_lane_without_the_kernels(monkeypatch):
    monkeypatch.setenv("GRADLAB_NATIVE", "0")
    native.reset()
    model, ((x, y),) = _transformer(batches=1)
    with gradlab.watch(model, every=1, dense_until=0) as rec:
        fast = rec._inst.hooks.reducer.deferred.fast
        for _ in range(3):
            F.cross_entropy(model(x), y).backward()
            assert fast.finish() is False  # (the step then takes the general path: PyTorch's reductions)
            rec.step()
        assert rec.frame()["stat"].eq("act_grad_norm").sum() > 0
