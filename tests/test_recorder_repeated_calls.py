"""A module run twice in one forward: its calls are never mixed (gradlab.recorder.repeated_calls)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.shared, self.out = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.shared(torch.tanh(self.shared(torch.tanh(self.inp(x))))))


def _record(model, steps=3, micro=1, **watch):
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradlab.watch(model, every=1, dense_until=0, **watch) as rec:
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                for xs, ys in zip(x.chunk(micro), y.chunk(micro)):
                    (F.cross_entropy(model(xs), ys) / micro).backward()
                rec.step()
                opt.step()
    said = [str(w.message) for w in caught if "more than once in one forward" in str(w.message)]
    return rec.frame(), said


@pytest.mark.parametrize("reduce_at", ["mixed", "hooks", "step"])
def test_a_module_run_twice_in_a_forward_is_named_once_and_its_calls_never_mixed(reduce_at):
    torch.manual_seed(0)
    frame, said = _record(_Shared(), reduce_at=reduce_at)
    assert len(said) == 1 and said[0].startswith("gradlab: shared (2 times) ran more than once in one forward")
    assert "Give each call its own module" in said[0]
    shared = frame[frame["layer"].str.startswith("shared")]
    assert set(shared["stat"]) >= {"grad_norm", "weight_norm"}  # its parameters are recorded
    assert not set(shared["stat"]) & {"act_mean", "act_std", "act_grad_norm"}  # at no step, the first included
    others = frame[frame["layer"] == "inp"]
    assert {"act_mean", "act_grad_norm"} <= set(others["stat"]) and set(others["step"]) == {0, 1, 2}


def test_gradient_accumulation_runs_every_module_as_often_and_is_not_named():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    frame, said = _record(model, micro=3)
    assert said == []
    assert set(frame[frame["stat"] == "act_grad_norm"]["layer"]) == {"0", "2", "4"}
