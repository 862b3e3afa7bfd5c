"""The lean hook of small, unshared probe points (gradlab.recorder.fast_taps): taken from the
second recorded step on, it records what the general hook records; any call it does not
describe goes to the general hook, and an output found changed in place sends its point back."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab.bench.transformer import tiny_transformer
from tests.recorder_frames import assert_same


def _train(model, batches, **watch):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = gradlab.watch(model, every=1, dense_until=0, **watch)
    lean = []
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        rec.step()
        opt.step()
        lean.append(len(rec._inst.hooks.fast.fast))
    rec.stop()
    return rec.frame(), lean


def test_lean_hooks_record_what_the_hooks_do_across_a_change_of_batch():
    torch.manual_seed(0)
    model, (x, y) = tiny_transformer(depth=2, batch=4)
    batches = [(x, y)] * 3 + [(x[:3], y[:3])] + [(x, y)] * 2  # a smaller batch: the general hook takes it
    frames = {}
    for where in ("mixed", "hooks"):
        frames[where], lean = _train(copy.deepcopy(model), batches, reduce_at=where)
        if where == "mixed":
            assert lean[0] > 0 and len(set(lean)) == 1  # learned on the first recorded step, kept through the change
        else:
            assert lean == [0] * len(batches)  # reductions in the hooks: nothing to learn
    assert_same(frames["hooks"], frames["mixed"])
    grads = frames["mixed"][frames["mixed"]["stat"] == "act_grad_norm"]
    assert grads.groupby("step")["value"].count().nunique() == 1  # every step has every point's gradient norm


class _LaterInPlace(nn.Module):
    """b's output is changed in place by a relu_ from the step ``after`` on."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.calls, self.after = 0, 3

    def forward(self, x):
        self.calls += 1
        h = self.b(torch.tanh(self.a(x)))
        return self.c(h.relu_() if self.calls > self.after else h.relu())


def test_an_output_changed_in_place_later_leaves_the_lean_hook_and_is_never_recorded_wrong():
    torch.manual_seed(0)
    model = _LaterInPlace()
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = gradlab.watch(model, every=1, dense_until=0)
    expected, lean = [], []
    for _ in range(6):
        with torch.no_grad():
            expected.append(model.b(torch.tanh(model.a(x))).mean().item())  # b's output before any relu_
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        rec.step()
        opt.step()
        lean.append({p.name for p in rec.probe_points if rec._inst.hooks.taps[p.index].fast is not None})
    df = rec.frame().set_index(["step", "layer", "stat"])["value"]
    rec.stop()
    assert "b" in lean[1] and "b" not in lean[3] and lean[3] == lean[5]  # revoked at step 3, for good
    for step in (0, 1, 2, 4, 5):  # step 3's kept output was changed: not recorded, never wrong
        assert df[(step, "b", "act_mean")] == pytest.approx(expected[step], rel=1e-5)
    assert (3, "b", "act_mean") not in df.index or np.isnan(df[(3, "b", "act_mean")])


def test_a_point_shared_with_a_block_or_another_point_keeps_the_general_hook():
    """In a ResNet a block's output is the next block's input (its norm is taken once for
    both) and a branch_out is its BatchNorm's output: those keep the general hook, which
    shares; the last block's output and the head are their own."""
    from gradlab.models import build

    torch.manual_seed(0)
    model = build("resnet8")
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    rec = gradlab.watch(model, every=1, dense_until=0)
    for _ in range(2):
        F.cross_entropy(model(x), y).backward()
        rec.step()
    lean = {p.name for p, t in zip(rec.probe_points, rec._inst.hooks.taps) if t.fast is not None}
    rec.stop()
    assert lean == {"layer3.0", "fc"}
