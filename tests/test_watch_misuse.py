"""Misuse the recorder would otherwise take silently is named once, in one line with the fix,
where it happens, and never where it does not: gradients zeroed before step(), step numbers
that do not increase, step() more than once per optimizer step, include/exclude patterns
that match nothing, tied parameters, modules gradlab cannot classify."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn as nn

import gradlab


def _lines(run) -> list[str]:
    """What gradlab said while ``run()`` ran (its RuntimeWarnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in caught if str(w.message).startswith("gradlab:")]


def _said(lines, words: str) -> list[str]:
    return [line for line in lines if words in line]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _loop(order: str, steps: int = 4, numbers=None, accumulate: int = 1, set_to_none: bool = True, **watch):
    """A training loop with its calls in ``order`` ("right": backward, step, zero_grad;
    "zeroed": zero_grad before step)."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def run():
        with gradlab.watch(model, every=1, **watch) as rec:
            for i in range(steps):
                for _ in range(accumulate):
                    model(torch.randn(8, 4)).square().mean().backward()
                    if accumulate > 1 and order == "step_per_micro_batch":
                        rec.step()
                if order == "zeroed":
                    opt.zero_grad(set_to_none=set_to_none)
                if order != "step_per_micro_batch":
                    rec.step(None if numbers is None else numbers[i])
                opt.step()
                opt.zero_grad(set_to_none=set_to_none)

    return _lines(run)


@pytest.mark.parametrize("set_to_none, words", [(True, "no parameter has a gradient"),
                                                (False, "gradient was exactly zero at step 0")])  # fmt: skip
def test_gradients_zeroed_before_step_are_named_once(set_to_none, words):
    lines = _loop("zeroed", set_to_none=set_to_none)
    assert len(_said(lines, words)) == 1 and len(_said(lines, "zero_grad")) == 1
    assert "before optimizer.zero_grad()" in _said(lines, words)[0]
    assert _loop("right", set_to_none=set_to_none) == []


@pytest.mark.parametrize("numbers, words", [([0, 0, 1, 1], "rec.step(0) came again"),
                                            ([5, 6, 2, 3], "rec.step(2) came after a later one")])  # fmt: skip
def test_step_numbers_that_do_not_increase_are_named_once(numbers, words):
    (line,) = _said(_loop("right", numbers=numbers), "rec.step(")
    assert words in line and "not the epoch's" in line
    assert _loop("right", numbers=[0, 1, 5, 9]) == [] and _loop("right") == []


def test_step_more_than_once_per_optimizer_step_is_named_once():
    lines = _loop("step_per_micro_batch", accumulate=4)
    (line,) = _said(lines, "no weight changed")
    assert "more than once per optimizer step" in line and "steps 1 and 2" in line  # the second such step
    assert _loop("right", accumulate=4) == []


def test_a_warm_up_from_zero_is_no_pattern():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def run():
        with gradlab.watch(model, every=1) as rec:
            for step in range(4):
                model(torch.randn(8, 4)).square().mean().backward()
                rec.step(step)
                opt.step()
                opt.zero_grad()
                opt.param_groups[0]["lr"] = 0.1  # lr 0 for the first step only

    assert _lines(run) == []


def _watch_once(model, x, **watch):
    def run():
        with gradlab.watch(model, every=1, **watch) as rec:
            model(x).sum().backward()
            rec.step()
        run.frame = rec.frame()

    run.lines = _lines(run)
    return run


def test_each_pattern_that_matches_nothing_is_named():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    (line,) = _watch_once(model, x, include=["0", "2*", "encoder.*"], exclude=["nope"]).lines
    assert "include 'encoder.*', exclude 'nope' match no layer of Sequential" in line and "'2*'" not in line
    assert "fnmatch" in line
    assert _watch_once(model, x, include=["0", "2*"], exclude=["2"]).lines == []


class Tied(nn.Module):
    def __init__(self, tie: bool):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.head = nn.Linear(6, 10, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.embed(tokens))


def test_tied_parameters_are_named_once_and_listed_under_every_name(tmp_path):
    tokens = torch.randint(0, 10, (4, 3))
    run = _watch_once(Tied(True), tokens, run_dir=tmp_path / "tied")
    (line,) = run.lines
    assert "embed.weight = head.weight: one tensor under several names (tied)" in line
    spec = json.loads((tmp_path / "tied" / "spec.json").read_text())
    (param,) = spec["model"]["parameters"]
    assert param["name"] == "embed.weight" and param["aliases"] == ["head.weight"]
    assert set(run.frame.layer[run.frame.stat == "grad_norm"]) == {"embed.weight"}  # recorded once
    untied = _watch_once(Tied(False), tokens, run_dir=tmp_path / "untied")
    assert untied.lines == []
    spec = json.loads((tmp_path / "untied" / "spec.json").read_text())
    assert not any("aliases" in p for p in spec["model"]["parameters"])
