"""act_sat_frac: the fraction of a point's outputs in the flat tails of the sigmoid or tanh
after it (|sigma(x) - 0.5| > 0.49, |tanh(x)| > 0.99), recorded exactly in every reduction
strategy and on the activation sample, only where such an activation follows, only when
asked for."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import gradlab
from gradlab import runs
from gradlab import stat_names as S
from gradlab.recorder.layout import Layout
from gradlab.recorder.reductions import COUNT_UNIT, count_beyond
from gradlab.recorder.statistics import SAT_SIGMOID, SAT_TANH, SATURATES_AT
from gradlab.recorder.targets import resolve
from tests.recorder_frames import frames

STRATEGIES = ["hooks", "step", "mixed"]


def _mlp(act: type[nn.Module]) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), act(), nn.Linear(32, 32), act(), nn.Linear(32, 3))
    with torch.no_grad():  # wide pre-activations: a good share of them saturates
        model[0].weight.mul_(6)
        model[2].weight.mul_(6)
    return model


def _cnn(act: type[nn.Module]) -> nn.Sequential:
    """conv -> BN -> act: the BN's output is measured (the conv's comes from the BN); its
    sample (16 x 8 x 12 x 12) is over mixed's limit, so mixed reduces it in the hook."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), act(), nn.Flatten(),
                          nn.Linear(8 * 12 * 12, 3))  # fmt: skip
    with torch.no_grad():
        model[1].weight.fill_(3.0)
    return model


def _by_hand(model: nn.Sequential, x: torch.Tensor, n: int | None = None) -> dict[str, float]:
    """{point: fraction of its sigmoid's/tanh's outputs in the tails}, in plain PyTorch, from
    the activations' own outputs on the first n examples of the batch (a BatchNorm normalizes
    with the whole batch's statistics); the bound on the inputs must say the same."""
    out, h = {}, x
    with torch.no_grad():
        for i, m in enumerate(copy.deepcopy(model)):
            h = m(h)
            nxt = model[i + 1] if i + 1 < len(model) else None
            if isinstance(nxt, nn.Sigmoid):
                tail = (torch.sigmoid(h[:n]) - 0.5).abs() > 0.49
                assert torch.equal(tail, h[:n].abs() > math.log(99))
                out[str(i)] = tail.double().mean().item()
            elif isinstance(nxt, nn.Tanh):
                tail = torch.tanh(h[:n]).abs() > 0.99
                assert torch.equal(tail, h[:n].abs() > math.atanh(0.99))
                out[str(i)] = tail.double().mean().item()
    return out


def _one_step(model, x, **watch_options):
    with gradlab.watch(model, every=1, **watch_options) as rec:
        model(x).square().mean().backward()
        rec.step()
    return rec.frame()


def _sat(df) -> dict[str, float]:
    return df[df.stat == S.ACT_SAT_FRAC].set_index("layer")["value"].to_dict()


@pytest.mark.parametrize("reduce_at", STRATEGIES)
@pytest.mark.parametrize("act_sample", [16, 5, None])
@pytest.mark.parametrize("make, x", [(_mlp, torch.randn(40, 6)), (_cnn, torch.randn(24, 2, 12, 12))],
                         ids=["mlp", "cnn"])  # fmt: skip
@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh])
def test_the_fraction_is_that_of_the_activations_own_outputs(act, make, x, act_sample, reduce_at):
    model = make(act)
    want = _by_hand(model, x, act_sample)  # on the sample: the first act_sample examples, as act_zero_frac
    assert want and all(0 < v < 1 for v in want.values())
    df = _one_step(model, x, stats=[S.ACT_SAT_FRAC, S.ACT_MEAN], act_sample=act_sample, reduce_at=reduce_at)
    assert _sat(df) == want  # exact: a count over the numel
    assert set(df.stat) == {S.ACT_SAT_FRAC, S.ACT_MEAN}
    assert len(df[df.stat == S.ACT_MEAN]) == len(resolve(model).points)  # every point, as before


def test_every_strategy_records_the_same_fractions_over_training_steps():
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 16), nn.Sigmoid(), nn.Linear(16, 3))
    torch.manual_seed(1)
    with torch.no_grad():
        model[0].weight.mul_(6)
        model[2].weight.mul_(8)
    x, y = torch.randn(24, 6), torch.randint(0, 3, (24,))
    out = frames(model, x, y, steps=3, reduce_at=STRATEGIES, stats=[S.ACT_SAT_FRAC], act_sample=8)
    sat = {w: f.sort_values(["step", "layer"], ignore_index=True) for w, (_, f) in out.items()}
    assert len(sat["hooks"]) == 6 and set(sat["hooks"].layer) == {"0", "2"}
    for w in STRATEGIES[1:]:
        assert sat[w].equals(sat["hooks"]), w


def test_only_points_followed_by_a_sigmoid_or_tanh_get_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8),
                          nn.Sigmoid(), nn.Linear(8, 2))  # fmt: skip
    df = _one_step(model, torch.randn(16, 4), stats=[S.ACT_SAT_FRAC, S.ACT_DEAD_FRAC, S.ACT_ZERO_FRAC])
    assert sorted(_sat(df)) == ["2", "4"]
    assert set(df[df.stat == S.ACT_DEAD_FRAC].layer) == set(df[df.stat == S.ACT_ZERO_FRAC].layer) == {"0"}


def test_a_relu_net_has_no_rows_and_says_why():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.warns(RuntimeWarning, match="act_sat_frac was asked for, but no probe point is followed by a "
                                            "sigmoid or tanh") as caught:  # fmt: skip
        df = _one_step(model, torch.randn(8, 4), stats=[S.ACT_SAT_FRAC, S.ACT_DEAD_FRAC])
    assert not any("act_dead_frac" in str(w.message) for w in caught)  # a ReLU is there
    assert S.ACT_SAT_FRAC not in set(df.stat) and S.ACT_DEAD_FRAC in set(df.stat)


def test_one_activation_of_the_two_is_enough_not_to_warn():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))  # no sigmoid: no warning either
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        df = _one_step(model, torch.randn(8, 4), stats=[S.ACT_SAT_FRAC])
    assert list(_sat(df)) == ["0"]


def test_not_recorded_unless_asked_for_and_costs_nothing_then():
    model = _mlp(nn.Sigmoid)
    df = _one_step(model, torch.randn(8, 6))
    assert S.ACT_SAT_FRAC not in set(df.stat) and S.ACT_SAT_FRAC in S.OPTIONAL_STATS
    targets = resolve(model)
    default = Layout.build(targets, S.DEFAULT_STATS)
    assert not any(r in (SAT_SIGMOID, SAT_TANH) for p in default.points for r, _ in p.reductions)
    asked = Layout.build(targets, S.DEFAULT_STATS + (S.ACT_SAT_FRAC,))
    assert asked.width == default.width + 2  # a column at each of the two points, nothing else
    relu = resolve(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    with pytest.warns(RuntimeWarning):
        assert Layout.build(relu, S.DEFAULT_STATS + (S.ACT_SAT_FRAC,), True).width == \
            Layout.build(relu, S.DEFAULT_STATS).width  # fmt: skip


def test_nested_points_renumbered_and_filtered_keep_their_activation():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 2)  # registered first, runs last
            self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh())

        def forward(self, x):
            return self.head(self.body(x))

    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.body[0].weight.mul_(6)
    x = torch.randn(16, 4)
    assert resolve(model).act_next == {"body.0": "tanh"}
    assert resolve(model, exclude="body.*").act_next == {}
    df = _one_step(model, x, stats=[S.ACT_SAT_FRAC])
    rows = df[df.stat == S.ACT_SAT_FRAC]
    assert rows.layer.tolist() == ["body.0"] and rows["index"].tolist() == [0]  # forward order
    with torch.no_grad():
        assert rows.value.item() == (torch.tanh(model.body[0](x)).abs() > 0.99).double().mean().item()


def test_the_rows_reach_the_run_directory(tmp_path):
    model, x = _mlp(nn.Tanh), torch.randn(16, 6)
    with gradlab.watch(model, every=1, stats=[S.ACT_SAT_FRAC], run_dir=tmp_path / "run") as rec:
        model(x).square().mean().backward()
        rec.step()
    layers = runs.read_run(tmp_path / "run").layers
    assert _sat(layers) == _by_hand(model, x)


def test_count_beyond_counts_both_tails_and_leaves_its_input_alone():
    t = SATURATES_AT["sigmoid"]
    assert t == pytest.approx(math.log(99)) and SATURATES_AT["tanh"] == pytest.approx(0.5 * math.log(199))
    x = torch.tensor([[0.0, t + 1e-5, -t - 1e-5, 4.0], [9.0, -9.0, t, float(np.nextafter(np.float32(t), 10))]])
    kept = x.clone()
    assert count_beyond(x, t).item() / COUNT_UNIT == 5  # t itself (as float32) is not beyond
    assert (count_beyond(x, t, dim=(1,)) / COUNT_UNIT).tolist() == [2.0, 3.0]
    assert count_beyond(x, t, out=torch.empty_like(x)).item() / COUNT_UNIT == 5
    assert torch.equal(x, kept)
    assert float(np.float32(t)) > t and count_beyond(x.double(), t).item() / COUNT_UNIT == 6  # t, rounded up, is
    clear = torch.tensor([0.0, 4.5, -4.7, 9.0, -20.0, 1.0])  # none near t in half precision
    for dtype in (torch.float16, torch.bfloat16):
        assert count_beyond(clear.to(dtype), t).item() / COUNT_UNIT == 3, dtype
    assert count_beyond(torch.tensor([1.0, float("nan")]), t).isnan()
