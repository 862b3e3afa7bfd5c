"""The statistic registry (gradlab.recorder.statistics): an opt-in statistic recorded exactly in
both reduction strategies, a model with nothing trainable, and watch() naming every option."""

import inspect

import pytest
import torch
import torch.nn as nn

import gradlab
from gradlab import stat_names as S
from gradlab.errors import RecorderError
from gradlab.recorder import Recorder


def _dead_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].bias[:3] = -100.0  # units 0, 1, 2 output nothing positive: dead
    return model


def _dead_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 16, 3))
    with torch.no_grad():
        model[0].bias[[1, 4]] = -100.0  # channels 1 and 4 are dead
    return model


def _one_step(model, x, **watch_options):
    with gradlab.watch(model, every=1, **watch_options) as rec:
        out = model(x)
        out.square().mean().backward()
        rec.step()
    return rec.frame()


@pytest.mark.parametrize("reduce_at", ["hooks", "step"])
@pytest.mark.parametrize("make, x", [(_dead_mlp, torch.randn(32, 6)), (_dead_cnn, torch.randn(32, 2, 4, 4))])
def test_dead_units_are_the_fraction_of_units_never_positive(make, x, reduce_at):
    model = make()
    with torch.no_grad():
        h = model[0](x[:16])  # the default act_sample: the first 16 examples
    axes = tuple(d for d in range(h.dim()) if d != 1)
    expected = (h.amax(dim=axes) <= 0).float().mean().item()
    assert expected > 0
    df = _one_step(model, x, stats=[S.ACT_DEAD_FRAC, S.ACT_ZERO_FRAC], reduce_at=reduce_at)
    dead = df[df.stat == S.ACT_DEAD_FRAC]
    assert dead.layer.tolist() == ["0"]  # only the point next to a ReLU
    assert dead.value.item() == pytest.approx(expected)
    assert set(df.stat) == {S.ACT_DEAD_FRAC, S.ACT_ZERO_FRAC}


def test_dead_units_of_a_sequence_model_count_features_not_positions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        model[0].bias[5] = -100.0
    x = torch.randn(3, 7, 4)  # batch, tokens, features: the units are the last axis
    df = _one_step(model, x, stats=[S.ACT_DEAD_FRAC])
    assert df[df.stat == S.ACT_DEAD_FRAC].value.item() == pytest.approx(1 / 6)


def test_dead_units_are_recorded_only_when_asked_for():
    df = _one_step(_dead_mlp(), torch.randn(8, 6))
    assert S.ACT_DEAD_FRAC not in set(df.stat) and set(df.stat) <= set(S.DEFAULT_STATS)


def test_asking_for_a_statistic_no_point_can_have_says_so():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))  # no ReLU anywhere
    with pytest.warns(RuntimeWarning, match="act_dead_frac was asked for, but no probe point is next to a ReLU"):
        gradlab.watch(model, stats=[S.ACT_DEAD_FRAC]).stop()


def test_a_model_with_every_parameter_frozen_records_its_activations():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(5, 4, requires_grad=True)  # gradients still flow to the input
    with gradlab.watch(model, every=1) as rec:
        model(x).square().sum().backward()
        rec.step()
        df = rec.frame()
    assert len(df) and set(df.stat) >= {S.ACT_MEAN, S.ACT_GRAD_NORM} and not set(df.stat) & set(S.PARAM_STATS)


def test_watch_names_every_recorder_option_keyword_only():
    watch_params = inspect.signature(gradlab.watch).parameters
    recorder_params = inspect.signature(Recorder.__init__).parameters
    assert list(watch_params) == [p for p in recorder_params if p != "self"] + ["findings"]  # watch's own: the rules
    for name, p in watch_params.items():
        assert p.kind != p.VAR_KEYWORD
        if name not in ("model", "findings"):
            assert p.kind == p.KEYWORD_ONLY and p.default == recorder_params[name].default, name
    with pytest.raises(TypeError):
        gradlab.watch(nn.Linear(2, 2), 10)  # every= must be named


def test_gradlab_watch_is_visible_to_tools():
    assert "watch" in dir(gradlab) and "Recorder" in dir(gradlab)
    assert gradlab.watch is gradlab.recorder.watch and gradlab.Recorder is Recorder


def test_unknown_statistic_names_the_optional_ones_too():
    with pytest.raises(RecorderError, match="act_dead_frac"):
        gradlab.watch(nn.Linear(2, 2), stats=["dead"])


def test_a_sparse_or_missing_gradient_is_not_written_and_the_others_are():
    """Parameter gradient norms are a stack per shape; a sparse gradient (an Embedding with
    sparse=True) or a missing one (an unused layer) leaves its own column unwritten only."""
    import torch.nn as nn
    import torch.nn.functional as F

    import gradlab

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4, sparse=True)
            self.a, self.unused = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, tokens):
            return self.a(self.emb(tokens)).sum(1)

    torch.manual_seed(0)
    model = Net()
    with gradlab.watch(model, every=1, dense_until=0) as rec:
        F.cross_entropy(model(torch.randint(0, 10, (3, 5))), torch.tensor([0, 1, 2])).backward()
        rec.step()
        df = rec.frame()
    grads = df[df.stat == "grad_norm"].set_index("layer")["value"]
    assert sorted(grads.index) == ["a.bias", "a.weight"]  # not emb.weight (sparse), not unused.* (none)
    assert grads["a.weight"] == pytest.approx(model.a.weight.grad.norm().item(), rel=1e-6)
    assert grads["a.bias"] == pytest.approx(model.a.bias.grad.norm().item(), rel=1e-6)
    assert set(df[df.stat == "weight_norm"].layer) >= {"emb.weight", "unused.weight", "a.weight"}
