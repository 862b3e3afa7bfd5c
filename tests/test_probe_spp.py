"""`gradlab analyze spp`: channel statistics, identity blocks, plain vs residual, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner

from gradlab.analysis_dirs import read_analysis
from gradlab.cli.main import cli
from gradlab.errors import ModelError
from gradlab.models import build
from gradlab.analyses.init_inputs import probe_batch
from gradlab.analyses.spp import BRANCH_VAR, SQ_MEAN, VAR, block_signals, channel_stats, signal_propagation


def test_channel_stats_known_answer():
    # channel 0 holds 1, 3, 5, 7 (mean 4, variance 5); channel 1 holds -2 everywhere
    h = torch.tensor([[[[1.0, 3.0]], [[-2.0, -2.0]]], [[[5.0, 7.0]], [[-2.0, -2.0]]]])  # [N=2, C=2, H=1, W=2]
    sq_mean, var = channel_stats(h)
    assert sq_mean == pytest.approx((16 + 4) / 2)
    assert var == pytest.approx((5 + 0) / 2)


def _signals(name, x, **kw):
    torch.manual_seed(0)
    model = build(name, num_classes=10, in_channels=x.shape[1], **kw)
    return model, block_signals(model, x)


def test_zero_init_residual_blocks_are_the_identity_within_a_stage():
    x = probe_batch("digits", 32, seed=0, inputs="gaussian").x
    model, got = _signals("resnet20", x, zero_init_residual=True)
    assert (got.loc[got["stat"] == BRANCH_VAR, "value"] == 0).all()  # F(x) = 0 exactly
    # stage 1 keeps the shape, so every block passes the stem's output through unchanged
    stem = {}
    torch.manual_seed(0)
    twin = build("resnet20", num_classes=10, in_channels=1, zero_init_residual=True)
    twin.bn1.register_forward_hook(lambda m, a, out: stem.setdefault("h", F.relu(out)))
    twin.train()
    with torch.no_grad():
        twin(x)
    want_sq_mean, want_var = channel_stats(stem["h"])
    stage1 = got[got["stage"] == 1]
    assert len(stage1["block"].unique()) == 3
    assert np.allclose(stage1.loc[stage1["stat"] == SQ_MEAN, "value"], want_sq_mean, rtol=1e-6)
    assert np.allclose(stage1.loc[stage1["stat"] == VAR, "value"], want_var, rtol=1e-6)


def test_batchnorm_branches_have_unit_variance_in_both_families():
    x = probe_batch("digits", 32, seed=1, inputs="gaussian").x
    for name in ("plain20", "resnet20"):
        _, got = _signals(name, x)
        branch = got.loc[got["stat"] == BRANCH_VAR, "value"]
        assert len(branch) == 9 and np.allclose(branch, 1.0, atol=1e-3)  # v / (v + eps)


def _stage1_var(frame, model):
    d = frame[(frame["model"] == model) & (frame["stat"] == VAR) & (frame["stage"] == 1)].sort_values("block")
    return d["value"].to_numpy()


def test_residual_variance_grows_along_a_stage_while_plain_stays_put():
    result = signal_propagation(depths=(56,), seeds=(0,), batch_size=32, device="cpu", progress=False)
    frame = result["by_model"]
    res, plain = _stage1_var(frame, "resnet56"), _stage1_var(frame, "plain56")
    assert len(res) == len(plain) == 9
    assert res[-1] > 3 * res[0]  # measured: 0.67 -> 3.6
    assert np.corrcoef(np.arange(9), res)[0, 1] > 0.97  # about linear
    assert 0.67 < plain[-1] / plain[0] < 1.5 and plain.max() < 0.6  # measured: ~0.35 throughout
    # the option-A transition (subsample, zero-pad half the channels) lowers the variance
    stage2 = frame[(frame["model"] == "resnet56") & (frame["stat"] == VAR) & (frame["stage"] == 2)]
    assert stage2.sort_values("block")["value"].iloc[0] < res[-1]


def test_real_inputs_and_non_zoo_models():
    result = signal_propagation(depths=(20,), families=("resnet",), seeds=(0, 1), inputs="real", batch_size=16,
                                device="cpu", progress=False)  # fmt: skip
    assert result.settings["inputs"] == "real" and set(result["by_model"]["n"]) == {2}
    assert set(result["spp"]["stat"]) == {SQ_MEAN, VAR, BRANCH_VAR}
    with pytest.raises(ModelError, match="residual blocks"):
        block_signals(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), torch.randn(4, 1, 8, 8))


def invoke(*args):
    return CliRunner().invoke(cli, ["analyze", "spp", *map(str, args)])


def test_cli_writes_the_folder_and_its_figure(tmp_path):
    out = tmp_path / "spp"
    result = invoke("--depths", "20,32", "--seeds", "0", "--batch-size", "16", "--formats", "png,svg", "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "figures" / "probe-spp.png").is_file() and (out / "figures" / "probe-spp.svg").is_file()
    assert "ResNet-32" in result.output  # the summary line names the deepest pair
    meta = json.loads((out / "analysis.json").read_text())
    assert meta["settings"]["inputs"] == "gaussian" and meta["settings"]["depths"] == [20, 32]
    assert set(read_analysis(out).tables["by_model"]["model"]) == {"plain20", "plain32", "resnet20", "resnet32"}


def test_cli_bad_input_fails_cleanly(tmp_path):
    result = invoke("--inputs", "uniform", "--out", tmp_path / "x")
    assert result.exit_code != 0 and "uniform" in result.output and "Traceback" not in result.output
    result = invoke("--families", "plain,dense", "--out", tmp_path / "x")
    assert result.exit_code != 0 and "dense" in result.output and "Traceback" not in result.output
    run_like = tmp_path / "run"
    run_like.mkdir()
    (run_like / "spec.json").write_text("{}")
    result = invoke("--depths", "20", "--out", run_like)
    assert result.exit_code != 0 and "training run directory" in result.output
    assert [p.name for p in run_like.iterdir()] == ["spec.json"]
    assert not (tmp_path / "x").exists()
