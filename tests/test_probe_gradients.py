"""`gradlab analyze gradients`: known answers, plain vs residual direction, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from gradlab import stat_names as S
from gradlab.analysis_dirs import read_analysis
from gradlab.cli.main import cli
from gradlab.errors import ConfigError, ModelError
from gradlab.models import build
from gradlab.analyses.init_gradients import first_last_ratios, init_gradients, layer_gradients, seed_mean
from gradlab.analyses.init_inputs import dataset_shape, probe_batch


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_linear_net_norms_match_the_hand_computed_gradients():
    # 1x1 conv (a matrix per pixel) then a linear layer: every gradient has a closed form
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.Flatten(), nn.Linear(3 * 2 * 2, 4, bias=False))
    x = torch.randn(5, 2, 2, 2)
    y = torch.tensor([0, 1, 2, 3, 1])
    got = layer_gradients(model, x, y)

    w1 = model[0].weight.detach().double().numpy()[:, :, 0, 0]  # [3, 2]
    w2 = model[2].weight.detach().double().numpy()  # [4, 12]
    xs = x.double().numpy()
    h = np.einsum("oc,bchw->bohw", w1, xs)
    logits = h.reshape(5, -1) @ w2.T
    g = _softmax(logits)
    g[np.arange(5), y.numpy()] -= 1.0
    g /= 5  # mean cross-entropy
    d_w2 = g.T @ h.reshape(5, -1)
    d_h = (g @ w2).reshape(h.shape)
    d_w1 = np.einsum("bohw,bchw->oc", d_h, xs)

    def value(stat, position):
        row = got[(got["stat"] == stat) & (got["position"] == position)]
        assert len(row) == 1, got
        return float(row["value"].iloc[0])

    assert value(S.GRAD_NORM, 1) == pytest.approx(np.linalg.norm(d_w1), rel=1e-5)
    assert value(S.GRAD_NORM, 2) == pytest.approx(np.linalg.norm(d_w2), rel=1e-5)
    assert value(S.ACT_GRAD_NORM, 1) == pytest.approx(np.linalg.norm(d_h), rel=1e-5)
    assert list(got.loc[got["stat"] == S.GRAD_NORM, "kind"]) == ["conv", "fc"]
    assert (got["stat"] == S.ACT_GRAD_NORM).sum() == 1  # dL/dh at conv outputs only
    # the same numbers as autograd's own gradients in the model
    assert value(S.GRAD_NORM, 2) == pytest.approx(float(model[2].weight.grad.norm()), rel=1e-6)


def test_positions_follow_the_main_path_of_a_zoo_model():
    batch = probe_batch("digits", 8, seed=0)
    torch.manual_seed(0)
    model = build("resnet20", num_classes=10, in_channels=batch.in_channels, shortcut="B")
    got = layer_gradients(model, batch.x, batch.y)
    w = got[got["stat"] == S.GRAD_NORM].sort_values("position")
    assert list(w["position"]) == list(range(1, 21))  # 19 convs + fc; projection shortcuts excluded
    assert w["layer"].iloc[0] == "conv1.weight" and w["layer"].iloc[-1] == "fc.weight"
    assert not w["layer"].str.contains("shortcut").any()
    a = got[got["stat"] == S.ACT_GRAD_NORM]
    assert list(a["position"]) == list(range(1, 20)) and (a["kind"] == "conv").all()
    assert np.isfinite(got["value"]).all() and (got["value"] > 0).all()


def test_seed_mean_is_geometric_and_ratios_use_conv_layers():
    rows = []
    for seed, scale in ((0, 1.0), (1, 100.0)):
        for pos, kind, base in ((1, "conv", 8.0), (2, "conv", 2.0), (3, "fc", 50.0)):
            rows.append({"family": "plain", "depth": 3, "model": "m", "seed": seed, "stat": S.GRAD_NORM,
                         "position": pos, "kind": kind, "layer": f"l{pos}", "value": base * scale})
    by_model = seed_mean(pd.DataFrame(rows)).sort_values("position")
    assert list(by_model["value"]) == pytest.approx([80.0, 20.0, 500.0])  # sqrt(x * 100x) = 10x
    assert list(by_model["n"]) == [2, 2, 2]
    ratios = first_last_ratios(by_model)
    assert ratios["ratio"].iloc[0] == pytest.approx(4.0)  # 80 / 20: the classifier is not the last conv


def test_plain_gradients_grow_towards_the_input_far_more_than_residual_ones():
    result = init_gradients(depths=(20, 56), seeds=(0,), batch_size=32, device="cpu", progress=False)
    r = result["ratios"].set_index(["model", "stat"])["ratio"]
    for stat in (S.GRAD_NORM, S.ACT_GRAD_NORM):
        assert r["plain56", stat] > 300  # measured ~2.5e3 (W) and ~1e4 (h)
        assert r["resnet56", stat] < 100  # measured ~13 and ~40
        assert r["plain56", stat] > 30 * r["resnet56", stat]
        assert r["plain56", stat] > 10 * r["plain20", stat]  # and it worsens with depth
    layers = result["layers"]
    assert set(layers["model"]) == {"plain20", "plain56", "resnet20", "resnet56"}
    assert result.settings["batch_size"] == 32 and result.settings["dataset"] == "digits"


def test_bad_arguments_are_clear_errors_before_any_work():
    with pytest.raises(ModelError, match="6n\\+2"):
        init_gradients(depths=(20, 57), seeds=(0,), progress=False)
    with pytest.raises(ConfigError, match="families"):
        init_gradients(depths=(20,), families=("plain", "dense"), progress=False)
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        init_gradients(depths=(20,), seeds=(-1,), progress=False)


def test_gaussian_inputs_take_the_shape_of_the_real_data():
    real = probe_batch("digits", 16, seed=3)
    noise = probe_batch("digits", 16, seed=3, inputs="gaussian")
    assert real.x.shape == noise.x.shape == (16, *dataset_shape("digits")[0])
    assert real.num_classes == noise.num_classes == 10
    # real batches are normalized by the training set's statistics: roughly standardized
    assert abs(float(real.x.mean())) < 0.5 and 0.5 < float(real.x.std()) < 2.0
    assert not torch.equal(probe_batch("digits", 16, seed=4).x, real.x)


def invoke(*args):
    return CliRunner().invoke(cli, ["analyze", "gradients", *map(str, args)])


def test_cli_writes_a_folder_with_settings_figure_and_summary(tmp_path):
    out = tmp_path / "grad"
    args = ("--depths", "20", "--seeds", "0,1", "--batch-size", "16", "--formats", "png", "--out", out)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"figure: {out / 'figures' / 'probe-gradients.png'}" in result.output
    assert "plain-20" in result.output and "ResNet-20" in result.output  # the summary line
    meta = json.loads((out / "analysis.json").read_text())
    assert meta["kind"] == "probe-gradients"
    assert meta["settings"]["depths"] == [20] and meta["settings"]["seeds"] == [0, 1]
    assert meta["env"]["torch"] == torch.__version__ and meta["env"]["device"] == "cpu"
    a = read_analysis(out)
    assert set(a.tables) == {"layers", "by_model", "ratios"}
    assert set(a.tables["by_model"]["n"]) == {2}
    # rerunning replaces the same kind of folder
    result = invoke(*args)
    assert result.exit_code == 0, result.output


def test_cli_bad_input_fails_cleanly_and_leaves_files_alone(tmp_path):
    result = invoke("--depths", "20,abc", "--out", tmp_path / "x")
    assert result.exit_code != 0 and "'abc' is not a whole number" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()
    result = invoke("--depths", "21", "--out", tmp_path / "x")
    assert result.exit_code != 0 and "6n+2" in result.output and "Traceback" not in result.output
    other = tmp_path / "notes"
    other.mkdir()
    (other / "paper.tex").write_text("keep me")
    result = invoke("--depths", "20", "--seeds", "0", "--out", other)
    assert result.exit_code != 0 and "left untouched" in result.output and "Traceback" not in result.output
    assert [p.name for p in other.iterdir()] == ["paper.tex"] and (other / "paper.tex").read_text() == "keep me"
    result = invoke("--depths", "20", "--formats", "gif", "--out", tmp_path / "y")
    assert result.exit_code != 0 and "unknown figure format" in result.output and not (tmp_path / "y").exists()
