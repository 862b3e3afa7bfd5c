"""Gradient accumulation: ||dL/dh|| is taken over the step's whole batch, every micro-batch's
gradient together, so a batch split into k micro-batches (each loss divided by k) records
what the same batch in one piece records; the activation statistics are the last
micro-batch's (docs/recorder.md)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab.bench.transformer import tiny_transformer


def _grad_norms(model, x, y, micro: int, reduce_at: str):
    model = copy.deepcopy(model)
    with gradlab.watch(model, every=1, dense_until=0, reduce_at=reduce_at) as rec:
        for _ in range(2):  # (the second recorded step takes the lean hooks: gradlab.recorder.fast_taps)
            model.zero_grad(set_to_none=True)
            for xs, ys in zip(x.chunk(micro), y.chunk(micro)):
                (F.cross_entropy(model(xs), ys) / micro).backward()
            rec.step()
    df = rec.frame()
    return df[df["stat"] == "act_grad_norm"].set_index(["step", "layer"])["value"].sort_index()


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


@pytest.mark.parametrize("reduce_at", ["mixed", "hooks", "step"])
@pytest.mark.parametrize("make", ["mlp", "transformer"])
def test_one_batch_in_four_micro_batches_records_the_gradient_norms_of_the_whole(make, reduce_at):
    torch.manual_seed(0)
    if make == "mlp":
        model, x, y = _mlp(), torch.randn(8, 6), torch.randint(0, 3, (8,))
    else:
        model, (x, y) = tiny_transformer(depth=2, batch=8)
    one, four = _grad_norms(model, x, y, 1, reduce_at), _grad_norms(model, x, y, 4, reduce_at)
    assert list(one.index) == list(four.index) and len(one) >= 3
    np.testing.assert_allclose(four.to_numpy(), one.to_numpy(), rtol=2e-5)


def test_the_gradient_norm_of_a_step_is_that_of_all_its_micro_batches_in_plain_pytorch():
    torch.manual_seed(0)
    model, x, y = _mlp(), torch.randn(8, 6), torch.randint(0, 3, (8,))
    kept = []

    def keep(module, args, out):
        out.retain_grad()
        kept.append(out)

    model[3].register_forward_hook(keep)
    with gradlab.watch(model, every=1, dense_until=0) as rec:
        for xs, ys in zip(x.chunk(2), y.chunk(2)):
            (F.cross_entropy(model(xs), ys) / 2).backward()
        rec.step()
    df = rec.frame().set_index(["layer", "stat"])["value"]
    expected = torch.cat([h.grad.flatten() for h in kept]).norm().item()
    assert df[("3", "act_grad_norm")] == pytest.approx(expected, rel=1e-5)
    assert df[("3", "act_mean")] == pytest.approx(kept[-1].mean().item(), rel=1e-5)  # the last micro-batch's


def test_the_norm_over_micro_batches_keeps_tiny_and_non_finite_norms():
    """Squares of norms near 1e-20 underflow float32; each column is scaled by its largest."""
    from gradlab.recorder.plans import column_slots, put_norms

    cols, slot = column_slots([7, 3, 7, 3, 5])
    assert cols == [7, 3, 5] and slot == [0, 1, 0, 1, 2]
    assert column_slots([2, 4]) == ([2, 4], None)
    norms = torch.tensor([3e-25, 0.0, 4e-25, 2.0, float("inf")])
    row = torch.full((8,), -1.0)
    put_norms(row, torch.tensor(cols), norms, torch.tensor(slot))
    assert row[7].item() == pytest.approx(5e-25, rel=1e-6) and row[3].item() == 2.0 and row[5].item() == float("inf")
    put_norms(row, torch.tensor([1, 2]), torch.tensor([float("nan"), 0.5]), None)
    assert np.isnan(row[1].item()) and row[2].item() == 0.5
